"""Mapping products on disk: pixels per second and peak RSS against scene size.

Generates ENVI products (BIL, 224 bands; ``int16`` with gain 1e-4 like an AVIRIS-NG or EnMAP
file, and ``float32``) of ``--sizes`` megapixels, square, their spectra mixtures of 16 random
endmembers, written row by row. A PCA band route (12 components; with the z-scored spectra
appended for a model with a spectral path) is fitted once per product and formulation on a
sample of pixels. Then each map runs in a process of its own, so that its peak resident memory
(``VmHWM``) is its own; products that fit in memory are mapped ``--rounds`` times by each
route, the two taking turns:

- on disk: ``ProductMapDataModule`` reads the product block by block (``--block-size``) and
  ``GeoTiffMapWriter`` writes the tiled GeoTIFF block by block (the time includes the writing);
- in memory (sizes up to ``--in-memory-max``): the whole product is read into a scene, then
  ``HyperspectralSceneDataModule``/``HyperspectralPatchDataModule`` map it into an in-memory
  class map, nothing written (its px/s counts the map only, not the reading; the reading time
  is a column of its own).

Both formulations (segmentation tiles; a patch per pixel for classification, up to
``--classification-max`` megapixels as it is the slower one) run through ``trainer.predict``
with models built from the shipped experiment files plus overrides (:func:`experiment_config`):
segmentation from ``configs/experiments/indian_pines/segmentation_linear/full.yaml`` with the
quickstart's encoder size, classification from ``configs/experiments/quickstart.yaml``; random
weights (speed does not depend on them), and the quickstart's spectral path reading all 224
bands. On disk, the datamodule and the writer are those of
``configs/products/predict_envi.yaml`` (its batch size unless ``--batch-size`` or
``--patch-batch-size``); in memory, the experiment's own datamodule. Each run records the
experiment, its parameter count, torch's threads and the allocator and GDAL environment
variables set.

    python -m benchmarks.product_scale --sizes 1 4 16 --results-md docs/results.md
    python -m benchmarks.product_scale --sizes 0.25 --workdir /tmp/product_scale
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import yaml

BANDS = 224
#: the shipped experiments' classes (Indian Pines; the class names the route file carries).
CLASSES = 16
#: spectra are mixtures of this many random endmembers (enough variance for 12 components).
ENDMEMBERS = 16
#: The shipped experiment each formulation's model (and in-memory datamodule) is built from.
EXPERIMENTS = {
    "segmentation": "indian_pines/segmentation_linear/full",
    "classification": "quickstart",
}
#: The shipped file that maps a product: ProductMapDataModule and GeoTiffMapWriter.
PRODUCT_CONFIG = "configs/products/predict_envi.yaml"
#: The segmentation encoder's size: the quickstart's (ViT-Base would take hours per map here).
ENCODER = {"embed_dim": 64, "depth": 4, "num_heads": 2, "patch_size": 4}
#: The experiment's data settings that give the samples' shape, per formulation.
SHAPE_KEYS = {"segmentation": ("tile_size",), "classification": ("patch_size", "img_size")}
#: The experiment's data settings an in-memory datamodule keeps (not its scene, root or split).
MEMORY_KEYS = (
    "band_route",
    "num_components",
    "append_spectra",
    *SHAPE_KEYS["segmentation"],
    *SHAPE_KEYS["classification"],
    "inference_stride",
)
#: Environment variables that change a map's memory or speed, recorded with each run.
ENVIRONMENT = (
    "MALLOC_ARENA_MAX",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "GDAL_CACHEMAX",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1, 4, 16], help="Mpx")
    parser.add_argument("--dtypes", nargs="+", default=["int16", "float32"])
    parser.add_argument("--formulations", nargs="+", default=["segmentation", "classification"])
    parser.add_argument("--in-memory-max", type=float, default=4, help="largest in-memory Mpx")
    parser.add_argument("--classification-max", type=float, default=16, help="largest Mpx")
    # Default: the product file's (null: chosen from the route, at most 512 pixels).
    parser.add_argument("--block-size", type=int, help="block side (default: the product file's)")
    parser.add_argument(
        "--batch-size", type=int, help=f"tiles per batch (default: {PRODUCT_CONFIG}'s)"
    )
    parser.add_argument(
        "--patch-batch-size", type=int, help=f"patches per batch (default: {PRODUCT_CONFIG}'s)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="paired on-disk/in-memory maps per product that fits in memory (order alternating)",
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/product_scale"))
    parser.add_argument("--keep", action="store_true", help="keep the generated products")
    parser.add_argument("--results-md", type=Path, help="write the table into this file")
    parser.add_argument("--json", type=Path, help="write the measurements as JSON")
    parser.add_argument("--plot", type=Path, help="plot px/s and peak RSS against size (PNG)")
    parser.add_argument(
        "--from-json",
        type=Path,
        nargs="+",
        help="measure nothing: the table (and plot) of earlier runs' --json files, concatenated",
    )
    parser.add_argument("--child", type=json.loads, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# -- products ---------------------------------------------------------------------------------


def product_side(mpx: float) -> int:
    return round(math.sqrt(mpx * 1e6))


def write_product(path: Path, side: int, dtype: str, seed: int = 0) -> Path:
    """An ENVI BIL product of ``side x side`` pixels, written 256 rows at a time; its header."""
    rng = np.random.default_rng(seed)
    endmembers = rng.uniform(0.05, 0.6, size=(ENDMEMBERS, BANDS)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        for top in range(0, side, 256):
            rows = min(256, side - top)
            weights = rng.dirichlet(np.ones(ENDMEMBERS), size=(rows, side)).astype(np.float32)
            spectra = weights @ endmembers  # (rows, side, bands)
            if dtype == "int16":
                spectra = np.round(spectra * 10000).astype("<i2")
            else:
                spectra = spectra.astype("<f4")
            f.write(np.ascontiguousarray(spectra.transpose(0, 2, 1)).tobytes())  # BIL
    header = [
        "ENVI",
        f"samples = {side}",
        f"lines = {side}",
        f"bands = {BANDS}",
        "header offset = 0",
        "file type = ENVI Standard",
        f"data type = {2 if dtype == 'int16' else 4}",
        "interleave = bil",
        "byte order = 0",
        "wavelength units = Nanometers",
        "wavelength = {" + ", ".join(f"{w:.2f}" for w in np.linspace(400, 2500, BANDS)) + "}",
        "map info = {UTM, 1, 1, 500000.0, 4100000.0, 30.0, 30.0, 33, North, WGS-84}",
    ]
    if dtype == "int16":
        header.append("data gain values = {" + ", ".join(["0.0001"] * BANDS) + "}")
    hdr = path.with_suffix(".hdr")
    hdr.write_text("\n".join(header) + "\n")
    return hdr


def fit_route(hdr: Path, out: Path, append_spectra: bool = False) -> None:
    """A 12-component PCA route fitted on a 64 x 64 window (at most), saved for the maps.

    ``append_spectra``: also append every band, z-scored, for a model with a spectral path (as
    the experiment's datamodule does when it is trained on the sensor).
    """
    import torch

    from terratorch_hsi_peft.products import Window, open_product
    from terratorch_hsi_peft.transforms import BandRoute

    with open_product(hdr) as product:
        side = min(64, product.metadata.height, product.metadata.width)
        sample = product.read(Window(0, 0, side, side)).reshape(BANDS, -1).T
    route = BandRoute.fit("pca", sample, num_components=12, append_spectra=append_spectra)
    names = json.dumps([f"class_{k}" for k in range(1, CLASSES + 1)])
    torch.save({"band_route": route.state_dict(), "class_names": names}, out)


# -- the model and data: shipped files plus overrides ---------------------------------------------


def experiment_config(formulation: str) -> dict[str, Any]:
    """The formulation's shipped experiment (:data:`EXPERIMENTS`) with this study's overrides.

    Segmentation gets the quickstart's encoder size (:data:`ENCODER`), so that both
    formulations map with one encoder; both get random weights (speed does not depend on
    them); a spectral path reads every product band (:data:`BANDS`, appended by the route).
    """
    from benchmarks.experiments import encoder_size, load_experiment, override

    config = load_experiment(EXPERIMENTS[formulation])
    args = "model.init_args.model_args"
    if formulation == "segmentation":
        encoder_size(config, **ENCODER)
    changes: dict[str, Any] = {f"{args}.backbone_pretrained": False}
    if "spectral_path" in config["model"]["init_args"]["model_args"]:
        changes[f"{args}.spectral_path.bands"] = BANDS
    return override(config, changes)


def appends_spectra(config: dict[str, Any]) -> bool:
    """Whether the experiment's datamodule appends the z-scored spectra to the routed bands."""
    return bool(config["data"]["init_args"].get("append_spectra", False))


def product_config() -> dict[str, Any]:
    """The shipped product-map file (:data:`PRODUCT_CONFIG`) as a dict."""
    from benchmarks.experiments import REPO

    return yaml.safe_load((REPO / PRODUCT_CONFIG).read_text())


def disk_datamodule(config: dict[str, Any], spec: dict[str, Any]) -> tuple[Any, list[Any]]:
    """``ProductMapDataModule`` and ``GeoTiffMapWriter`` as :data:`PRODUCT_CONFIG` gives them,
    with the experiment's sample shape and this run's product, block size and batch size."""
    from benchmarks.experiments import override
    from terratorch_hsi_peft.callbacks import GeoTiffMapWriter
    from terratorch_hsi_peft.datamodules import ProductMapDataModule

    product = product_config()
    data = config["data"]["init_args"]
    changes = {
        "product": str(spec["product"]),
        "formulation": spec["formulation"],
        "batch_size": spec["batch_size"],
        **{key: data[key] for key in SHAPE_KEYS[spec["formulation"]]},
    }
    if spec.get("block_size") is not None:
        changes["block_size"] = spec["block_size"]
    init = override(product["data"]["init_args"], changes)
    (writer,) = product["trainer"]["callbacks"]
    callback = GeoTiffMapWriter(**{**writer.get("init_args", {}), "output_dir": str(spec["out"])})
    return ProductMapDataModule(**init), [callback]


def memory_datamodule(config: dict[str, Any], scene: Any, batch_size: int) -> Any:
    """The experiment's own datamodule over the in-memory ``scene``: its band route (restored
    from the route file), sample shape and appended spectra."""
    from benchmarks.experiments import build_datamodule

    data = config["data"]
    keep = {key: value for key, value in data["init_args"].items() if key in MEMORY_KEYS}
    init_args = {**keep, "scene": scene, "batch_size": batch_size}
    return build_datamodule({"data": {"class_path": data["class_path"], "init_args": init_args}})


def count_parameters(task: Any) -> int:
    return sum(p.numel() for p in task.parameters())


# -- one map, in a process of its own -----------------------------------------------------------


def peak_rss_mib() -> float:
    """This process's peak resident memory (MiB): ``VmHWM``, the high-water mark of its own
    address space.

    Not ``ru_maxrss``: Linux keeps that across ``execve``, and Python starts the child with
    ``vfork``, so a child's ``ru_maxrss`` starts at its parent's peak (the parent writing the
    product: 1.9 GiB "before predict" at 1 Mpx float32).
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Map one product (``spec``): seconds, pixels and this process's peak RSS."""
    import logging

    import torch
    from lightning import Trainer
    from lightning.pytorch.callbacks import BasePredictionWriter

    from benchmarks.experiments import build_model
    from terratorch_hsi_peft.callbacks.class_map_writer import _class_indices
    from terratorch_hsi_peft.datasets import HyperspectralScene
    from terratorch_hsi_peft.products import open_product

    for name in ("lightning.pytorch", "lightning.fabric", "terratorch", "terratorch_hsi_peft"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.set_float32_matmul_precision("highest")
    state = torch.load(spec["route"], weights_only=True)
    config = experiment_config(spec["formulation"])
    task = build_model(config)
    options = {"accelerator": "cpu", "logger": False, "enable_progress_bar": False}
    read_seconds = 0.0
    if spec["mode"] == "disk":
        dm, callbacks = disk_datamodule(config, spec)
        dm.load_state_dict(state)
    else:
        start = time.perf_counter()
        with open_product(spec["product"]) as product:
            cube = product.read()
        scene = HyperspectralScene(cube.transpose(1, 2, 0), name="scene")
        del cube
        read_seconds = time.perf_counter() - start
        dm = memory_datamodule(config, scene, spec["batch_size"])
        dm.load_state_dict(state)

        class Paste(BasePredictionWriter):  # the in-memory map, nothing written
            def on_predict_start(self, trainer, pl_module):
                self.class_map = np.full(scene.shape, -1, dtype=np.int64)

            def write_on_batch_end(self, trainer, module, prediction, indices, *args):
                classes = _class_indices(prediction)
                trainer.datamodule.paste_predictions(self.class_map, list(indices), classes)

        callbacks = [Paste(write_interval="batch")]
    trainer = Trainer(callbacks=callbacks, **options)
    # The process's floor: Python, torch, TerraTorch, the model (and, in memory, the scene).
    before = peak_rss_mib()
    # The machine's 1-minute load around the map: the runs share their cores with other jobs.
    load_before = os.getloadavg()[0]
    start, cpu_start = time.perf_counter(), time.process_time()
    trainer.predict(task, dm, return_predictions=False)
    seconds = time.perf_counter() - start
    # CPU seconds of all its threads: less sensitive to other jobs on the cores than wall time.
    cpu_seconds = time.process_time() - cpu_start
    height, width = dm.shape if spec["mode"] == "disk" else dm.scene.shape
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "read_seconds": read_seconds,
        "pixels": height * width,
        "peak_rss_mib": peak_rss_mib(),
        "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_predict_mib": before,
        "block_size": dm.block_size if spec["mode"] == "disk" else None,
        "load": [load_before, os.getloadavg()[0]],
        "experiment": EXPERIMENTS[spec["formulation"]],
        "parameters": count_parameters(task),
        "torch_threads": torch.get_num_threads(),
        "environment": {k: os.environ[k] for k in ENVIRONMENT if k in os.environ},
    }


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one map in a new process; its JSON result."""
    result = subprocess.run(
        [
            *(sys.executable, "-m", "benchmarks.product_scale"),
            *("--child", json.dumps(spec, default=str)),
        ],
        cwd=Path(__file__).resolve().parents[1],  # the repository root, where -m finds it
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"map {spec} failed:\n{result.stderr[-4000:]}")
    return {**spec, **json.loads(result.stdout.strip().splitlines()[-1])}


# -- the run ------------------------------------------------------------------------------------


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _peak(row: dict[str, Any], route: str) -> str:
    """A route's peak RSS (MiB), the largest over the paired rounds."""
    runs = [runs[route] for runs in row.get("rounds") or [row]]
    return f"{max(run['peak_rss_mib'] for run in runs):,.0f}"


def paired_rounds(spec: dict[str, Any], rounds: int) -> dict[str, Any]:
    """``rounds`` on-disk and in-memory maps of one product, taking turns (the order alternates,
    so a change in the machine's load falls on both routes alike).

    ``rounds`` keeps every round's two runs; ``disk`` and ``memory`` are those of the median
    round (by the wall-time ratio). The table gives each ratio's median over the rounds and the
    largest peak RSS.
    """
    pairs = []
    for index in range(rounds):
        order = ("disk", "memory") if index % 2 == 0 else ("memory", "disk")
        pairs.append({mode: measure({**spec, "mode": mode}) for mode in order})
    median = sorted(pairs, key=lambda runs: round_ratios(runs)[0])[(rounds - 1) // 2]
    return {"disk": median["disk"], "memory": median["memory"], "rounds": pairs}


def round_ratios(runs: dict[str, dict[str, Any]]) -> tuple[float, float, float]:
    """On-disk px/s over in-memory px/s: by wall time, by CPU time, and end to end (the
    in-memory route's reading of the whole product counted too; the on-disk time includes its
    reading and writing)."""
    disk, memory = runs["disk"], runs["memory"]
    return (
        memory["seconds"] / disk["seconds"],
        memory["cpu_seconds"] / disk["cpu_seconds"],
        (memory["seconds"] + memory["read_seconds"]) / disk["seconds"],
    )


def _ratio(row: dict[str, Any], key: int) -> str:
    """One of :func:`round_ratios` (``key``): the median over the paired rounds with their
    range, or the one pair's."""
    values = sorted(round_ratios(runs)[key] for runs in row.get("rounds") or [row])
    middle = values[(len(values) - 1) // 2]
    spread = f" ({values[0]:.2f}-{values[-1]:.2f})" if len(values) > 1 else ""
    return f"{middle:.2f}{spread}"


def _load(run: dict[str, Any] | None) -> str:
    """The machine's 1-minute load average before and after a map (``-`` if not recorded)."""
    if not run or "load" not in run:
        return "-"
    return "{:.1f}-{:.1f}".format(*run["load"])


def _order(row: dict[str, Any]) -> tuple:
    return row["formulation"], row["dtype"], row["mpx"], row["disk"].get("block_size") or 0


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Pixels/s and peak RSS against scene size, one line per formulation, dtype and route."""
    from matplotlib.figure import Figure

    from terratorch_hsi_peft.utils.download import atomic_write

    fig = Figure(figsize=(10, 3.8), layout="constrained")
    speed, memory = fig.subplots(1, 2)
    lines: dict[tuple[str, str, str, int], list[tuple[float, float, float]]] = {}
    for row in sorted(rows, key=_order):
        for route in ("disk", "memory"):
            run = row.get(route)
            if run:
                key = (row["formulation"], row["dtype"], route, row["disk"].get("block_size") or 0)
                rate = run["pixels"] / run["seconds"]
                peak = max(runs[route]["peak_rss_mib"] for runs in row.get("rounds") or [row])
                lines.setdefault(key, []).append((row["mpx"], rate, peak / 1024))
    for (formulation, dtype, route, block), points in lines.items():
        mpx, rate, rss = zip(*points, strict=True)
        where = "in memory" if route == "memory" else f"on disk, blocks {block or '?'}"
        style = {
            "marker": "o" if formulation == "segmentation" else "s",
            "linestyle": "-" if route == "disk" else "--",
            "label": f"{formulation}, {dtype}, {where}",
        }
        speed.plot(mpx, rate, **style)
        memory.plot(mpx, rss, **style)
    memory.axhline(1.5e9 / 2**30, color="grey", linewidth=0.8)
    target = memory.get_yaxis_transform()  # x in axes fraction, y in data
    memory.text(0.01, 1.5e9 / 2**30, "target 1.5 GB", transform=target, va="bottom", fontsize=7)
    for ax, label in ((speed, "pixels / s"), (memory, "peak RSS (GiB)")):
        ax.set_xscale("log")
        ax.set_xlabel("scene (Mpx, 224 bands)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    memory.set_ylim(bottom=0)
    memory.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=110)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| scene | dtype | on disk (GB) | formulation | block | on-disk px/s | in-memory px/s | "
        "on-disk / in-memory | same, by CPU time | same, in-memory read counted | "
        "on-disk peak RSS (MiB) | "
        "of which before predict (MiB) | "
        "in-memory peak RSS (MiB) | in-memory read (s) | load (on disk; in memory) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        disk, memory = row["disk"], row.get("memory")
        side = product_side(row["mpx"])
        rate = disk["pixels"] / disk["seconds"]
        mem_rate = memory["pixels"] / memory["seconds"] if memory else None
        lines.append(
            f"| {side}x{side} ({row['mpx']:g} Mpx) | {row['dtype']} | {row['gb']:.2f} | "
            f"{row['formulation']} | {disk.get('block_size') or '-'} | {rate:,.0f} | "
            + (
                f"{mem_rate:,.0f} | {_ratio(row, 0)} | {_ratio(row, 1)} | {_ratio(row, 2)} | "
                if memory
                else "- | - | - | - | "
            )
            + f"{_peak(row, 'disk')} | {_mib(disk.get('rss_before_predict_mib'))} | "
            + (
                f"{_peak(row, 'memory')} | {memory['read_seconds']:.1f} | "
                if memory
                else "- | - | "
            )
            + f"{_load(disk)}; {_load(memory)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        print(json.dumps(run_child(args.child)))
        return 0
    if args.from_json is not None:
        rows = [row for path in args.from_json for row in json.loads(path.read_text())]
        write_results(args, sorted(rows, key=_order), argv)
        return 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    sizes = [
        product_side(s) ** 2 * BANDS * {"int16": 2}.get(d, 4)
        for s in args.sizes
        for d in args.dtypes
    ]
    need = sum(sizes) if args.keep else max(sizes)  # each product is removed after its maps
    free = shutil.disk_usage(args.workdir).free
    if need > 0.9 * free:
        print(f"The products need {need / 1e9:.1f} GB; {args.workdir} has {free / 1e9:.1f} free.")
        return 2
    rows = []
    for dtype in args.dtypes:
        for mpx in args.sizes:
            side = product_side(mpx)
            folder = args.workdir / f"{dtype}_{mpx:g}"
            start = time.perf_counter()
            hdr = write_product(folder / "product.bil", side, dtype)
            made = time.perf_counter() - start
            gb = (folder / "product.bil").stat().st_size / 1e9
            print(f"{dtype} {side}x{side}: {gb:.2f} GB written in {made:.0f} s", flush=True)
            for formulation in args.formulations:
                if formulation == "classification" and mpx > args.classification_max:
                    continue
                route = folder / f"route_{formulation}.pt"
                fit_route(hdr, route, appends_spectra(experiment_config(formulation)))
                spec = {
                    "product": hdr,
                    "route": route,
                    "formulation": formulation,
                    "block_size": args.block_size,
                    "batch_size": batch_size(args, formulation),
                    "out": folder / f"maps_{formulation}",
                }
                row = {"dtype": dtype, "mpx": mpx, "gb": gb, "formulation": formulation}
                row["command"] = _command(argv)
                if mpx <= args.in_memory_max:
                    row.update(paired_rounds(spec, args.rounds))
                else:
                    row["disk"] = measure({**spec, "mode": "disk"})
                rows.append(row)
                print(markdown_table([row]).splitlines()[-1], flush=True)
            if not args.keep:
                shutil.rmtree(folder)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))
    write_results(args, rows, argv)
    return 0


def batch_size(args: argparse.Namespace, formulation: str) -> int:
    """Tiles (``--batch-size``) or patches (``--patch-batch-size``) per batch; by default the
    product file's ``batch_size``."""
    given = args.patch_batch_size if formulation == "classification" else args.batch_size
    if given is not None:
        return given
    return product_config()["data"]["init_args"]["batch_size"]


def _command(argv: list[str] | None) -> str:
    return "python -m benchmarks.product_scale " + " ".join(argv or sys.argv[1:])


def models_sentence() -> str:
    """Where the timed models come from, for the report."""
    seg, cls = (f"`configs/experiments/{EXPERIMENTS[f]}.yaml`" for f in EXPERIMENTS)
    size = ", ".join(f"{key} {value}" for key, value in ENCODER.items())
    return (
        f"Models: segmentation from {seg} with the quickstart's encoder size ({size}), "
        f"classification from {cls}, both with random weights and a PCA route to 12 bands "
        f"(the quickstart's spectral path reads all {BANDS} bands); on disk, the datamodule and "
        f"writer of `{PRODUCT_CONFIG}` (`python -m benchmarks.product_scale --help`)."
    )


def write_results(args: argparse.Namespace, rows: list[dict[str, Any]], argv: Any) -> None:
    """Print the table; with ``--results-md``, put it into that file's section."""
    table = markdown_table(rows)
    print(table)
    if args.plot:
        plot(rows, args.plot)
    if not args.results_md:
        return
    from benchmarks.docgen.sections import update_markdown_section

    # The runs that measured the rows (several with --from-json), then this one.
    commands = list(dict.fromkeys(row["command"] for row in rows if "command" in row))
    commands += [c for c in [_command(argv)] if c not in commands]
    figure = ""
    if args.plot:
        img = os.path.relpath(args.plot.resolve(), args.results_md.resolve().parent)
        figure = f"![Pixels/s and peak RSS against scene size]({img})\n\n"
    body = (
        "".join(f"`{command}`\n\n" for command in commands) + f"{table}\n\n{figure}"
        "Each map runs in a process of its own. On disk: `ProductMapDataModule` reads one block "
        "(plus the tiles' or patches' halo) at a time and `GeoTiffMapWriter` writes the tiled "
        "GeoTIFF block by block (its time includes reading and writing); block is the block "
        "side it used. In memory: the whole product is read into a scene (the read column, "
        "not in its px/s), then the scene/patch datamodule maps it into an in-memory class map, "
        "nothing written. Products that fit in memory are mapped in paired rounds, the two "
        "routes taking turns in alternating order; the ratios are the median over the rounds "
        "(range in brackets), by wall time, by CPU time (all threads of the process, less "
        "sensitive to other jobs on the cores) and with the in-memory route's reading counted. "
        "Load is the machine's 1-minute load average before and after the median round's maps. "
        "Peak RSS is the process's own high-water mark (`VmHWM`), the largest over the rounds; "
        "the column after it is the same process before `predict` (Python, torch, TerraTorch, "
        "the model): what mapping adds is the difference. "
        f"{models_sentence()}\n"
    )
    update_markdown_section(args.results_md, "product-scale", "## Products on disk", body)


if __name__ == "__main__":
    sys.exit(main())
