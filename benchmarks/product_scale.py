"""Mapping products on disk: pixels per second and peak RSS against scene size.

Generates ENVI products (BIL, 224 bands; ``int16`` with gain 1e-4 like an AVIRIS-NG or EnMAP
file, and ``float32``) of ``--sizes`` megapixels, square, their spectra mixtures of 16 random
endmembers, written row by row. A PCA band route (12 components) is fitted once on a sample of
pixels. Then each map runs in a process of its own, so that its peak resident memory
(``VmHWM``) is its own:

- on disk: ``ProductMapDataModule`` reads the product block by block (``--block-size``) and
  ``GeoTiffMapWriter`` writes the tiled GeoTIFF block by block (the time includes the writing);
- in memory (sizes up to ``--in-memory-max``): the whole product is read into a scene, then
  ``HyperspectralSceneDataModule``/``HyperspectralPatchDataModule`` map it into an in-memory
  class map, nothing written (its px/s counts the map only, not the reading; the reading time
  is a column of its own).

Both formulations (segmentation tiles; a patch per pixel for classification, up to
``--classification-max`` megapixels as it is the slower one), through ``trainer.predict`` with
the same random-init SpectralGPT model (speed does not depend on the weights). That model is a
tiny stock TerraTorch one (``EncoderDecoderFactory``, width 16, one block) built here, not a
shipped experiment file: the study times the product pipeline (read, band route, predict, write),
and building it from ``configs/experiments`` changes the timed model, so its published runs
would have to be redone first.

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

BANDS = 224
CLASSES = 8
#: spectra are mixtures of this many random endmembers (enough variance for 12 components).
ENDMEMBERS = 16
#: the SpectralGPT encoder of the runs: one block, as in the tests' tiny models.
GEOMETRY = {"embed_dim": 16, "depth": 1, "num_heads": 2, "tile_size": 32, "img_size": 16}
PATCH_SIZE = 9


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1, 4, 16], help="Mpx")
    parser.add_argument("--dtypes", nargs="+", default=["int16", "float32"])
    parser.add_argument("--formulations", nargs="+", default=["segmentation", "classification"])
    parser.add_argument("--in-memory-max", type=float, default=4, help="largest in-memory Mpx")
    parser.add_argument("--classification-max", type=float, default=16, help="largest Mpx")
    # 512-pixel blocks: one tile row and column in 33 is predicted twice (by both blocks it
    # reaches into), 1 in 17 with 256; the window is read in strips, so its memory stays small.
    parser.add_argument("--block-size", type=int, default=512)
    # 16 tiles: the FCN decoder's activations are about 14 MB a 32 x 32 tile (900 MB at 64).
    parser.add_argument("--batch-size", type=int, default=16, help="tiles per batch")
    parser.add_argument("--patch-batch-size", type=int, default=1024, help="patches per batch")
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


def fit_route(hdr: Path, out: Path) -> None:
    """A 12-component PCA route fitted on a 64 x 64 window (at most), saved for the maps."""
    import torch

    from terratorch_hsi_peft.products import Window, open_product
    from terratorch_hsi_peft.transforms import BandRoute

    with open_product(hdr) as product:
        side = min(64, product.metadata.height, product.metadata.width)
        sample = product.read(Window(0, 0, side, side)).reshape(BANDS, -1).T
    route = BandRoute.fit("pca", sample, num_components=12)
    names = json.dumps([f"class_{k}" for k in range(1, CLASSES + 1)])
    torch.save({"band_route": route.state_dict(), "class_names": names}, out)


# -- one map, in a process of its own -----------------------------------------------------------


def build_task(formulation: str) -> Any:
    from lightning import seed_everything
    from terratorch.tasks import ClassificationTask, SemanticSegmentationTask

    seed_everything(0)
    g = GEOMETRY
    backbone = {
        "backbone": "spectralgpt_vit_base",
        "backbone_num_bands": 12,
        "backbone_embed_dim": g["embed_dim"],
        "backbone_depth": g["depth"],
        "backbone_num_heads": g["num_heads"],
    }
    if formulation == "segmentation":
        return SemanticSegmentationTask(
            model_factory="EncoderDecoderFactory",
            loss="ce",
            ignore_index=-1,
            model_args={
                **backbone,
                "backbone_img_size": g["tile_size"],
                "necks": [
                    {"name": "SelectIndices", "indices": [-1]},
                    {"name": "ReshapeTokensToImage"},
                ],
                "decoder": "FCNDecoder",
                "num_classes": CLASSES,
            },
        )
    return ClassificationTask(
        model_factory="EncoderDecoderFactory",
        model_args={
            **backbone,
            "backbone_img_size": g["img_size"],
            "backbone_out_indices": [-1],
            "necks": [{"name": "AggregateTokens", "pooling": "mean"}],
            "decoder": "IdentityDecoder",
            "num_classes": CLASSES,
        },
    )


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

    from terratorch_hsi_peft.callbacks import GeoTiffMapWriter
    from terratorch_hsi_peft.callbacks.class_map_writer import _class_indices
    from terratorch_hsi_peft.datamodules import (
        HyperspectralPatchDataModule,
        HyperspectralSceneDataModule,
        ProductMapDataModule,
    )
    from terratorch_hsi_peft.datasets import HyperspectralScene
    from terratorch_hsi_peft.products import open_product

    for name in ("lightning.pytorch", "lightning.fabric", "terratorch", "terratorch_hsi_peft"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.set_float32_matmul_precision("highest")
    state = torch.load(spec["route"], weights_only=True)
    formulation = spec["formulation"]
    task = build_task(formulation)
    seg = formulation == "segmentation"
    batch = spec["batch_size"] if seg else spec["patch_batch_size"]
    shape = {"tile_size": GEOMETRY["tile_size"]} if seg else {"patch_size": PATCH_SIZE}
    if not seg:
        shape["img_size"] = GEOMETRY["img_size"]
    options = {"accelerator": "cpu", "logger": False, "enable_progress_bar": False}
    read_seconds = 0.0
    if spec["mode"] == "disk":
        dm = ProductMapDataModule(
            str(spec["product"]),
            formulation=formulation,
            block_size=spec["block_size"],
            batch_size=batch,
            **shape,
        )
        dm.load_state_dict(state)
        callbacks = [GeoTiffMapWriter(output_dir=str(spec["out"]))]
    else:
        start = time.perf_counter()
        with open_product(spec["product"]) as product:
            cube = product.read()
        scene = HyperspectralScene(cube.transpose(1, 2, 0), name="scene")
        del cube
        read_seconds = time.perf_counter() - start
        cls = HyperspectralSceneDataModule if seg else HyperspectralPatchDataModule
        dm = cls(scene=scene, band_route="pca", num_components=12, batch_size=batch, **shape)
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
        "load": [load_before, os.getloadavg()[0]],
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


def _peak(run: dict[str, Any]) -> str:
    """Peak RSS; ``*`` marks a run measured with ``ru_maxrss`` (before ``VmHWM`` was used):
    the larger of its own peak and its parent's, an upper bound."""
    return f"{run['peak_rss_mib']:,.0f}" + ("" if "ru_maxrss_mib" in run else "*")


def _cpu_ratio(disk: dict[str, Any], memory: dict[str, Any] | None) -> str:
    """Pixels per CPU second on disk over in memory (``-`` if not recorded)."""
    if not memory or "cpu_seconds" not in disk or "cpu_seconds" not in memory:
        return "-"
    return f"{memory['cpu_seconds'] / disk['cpu_seconds']:.2f}"


def _load(run: dict[str, Any] | None) -> str:
    """The machine's 1-minute load average before and after a map (``-`` if not recorded)."""
    if not run or "load" not in run:
        return "-"
    return "{:.1f}-{:.1f}".format(*run["load"])


def _order(row: dict[str, Any]) -> tuple:
    return row["formulation"], row["dtype"], row["mpx"]


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Pixels/s and peak RSS against scene size, one line per formulation, dtype and route."""
    from matplotlib.figure import Figure

    from terratorch_hsi_peft.utils.download import atomic_write

    fig = Figure(figsize=(10, 3.8), layout="constrained")
    speed, memory = fig.subplots(1, 2)
    lines: dict[tuple[str, str, str], list[tuple[float, float, float]]] = {}
    for row in sorted(rows, key=_order):
        for route in ("disk", "memory"):
            run = row.get(route)
            if run:
                key = (row["formulation"], row["dtype"], route)
                rate = run["pixels"] / run["seconds"]
                lines.setdefault(key, []).append((row["mpx"], rate, run["peak_rss_mib"] / 1024))
    for (formulation, dtype, route), points in lines.items():
        mpx, rate, rss = zip(*points, strict=True)
        style = {
            "marker": "o" if formulation == "segmentation" else "s",
            "linestyle": "-" if route == "disk" else "--",
            "label": f"{formulation}, {dtype}, {'on disk' if route == 'disk' else 'in memory'}",
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
        "| scene | dtype | on disk (GB) | formulation | on-disk px/s | in-memory px/s | "
        "on-disk / in-memory | same, by CPU time | on-disk peak RSS (MiB) | "
        "of which before predict (MiB) | "
        "in-memory peak RSS (MiB) | in-memory read (s) | load (on disk; in memory) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        disk, memory = row["disk"], row.get("memory")
        side = product_side(row["mpx"])
        rate = disk["pixels"] / disk["seconds"]
        mem_rate = memory["pixels"] / memory["seconds"] if memory else None
        lines.append(
            f"| {side}x{side} ({row['mpx']:g} Mpx) | {row['dtype']} | {row['gb']:.2f} | "
            f"{row['formulation']} | {rate:,.0f} | "
            + (f"{mem_rate:,.0f} | {rate / mem_rate:.2f} | " if memory else "- | - | ")
            + f"{_cpu_ratio(disk, memory)} | "
            + f"{_peak(disk)} | {_mib(disk.get('rss_before_predict_mib'))} | "
            + (f"{_peak(memory)} | {memory['read_seconds']:.1f} | " if memory else "- | - | ")
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
            route = folder / "route.pt"
            fit_route(hdr, route)
            gb = (folder / "product.bil").stat().st_size / 1e9
            print(f"{dtype} {side}x{side}: {gb:.2f} GB written in {made:.0f} s", flush=True)
            for formulation in args.formulations:
                if formulation == "classification" and mpx > args.classification_max:
                    continue
                spec = {
                    "product": hdr,
                    "route": route,
                    "formulation": formulation,
                    "block_size": args.block_size,
                    "batch_size": args.batch_size,
                    "patch_batch_size": args.patch_batch_size,
                    "out": folder / f"maps_{formulation}",
                }
                row = {"dtype": dtype, "mpx": mpx, "gb": gb, "formulation": formulation}
                row["command"] = _command(argv)
                row["disk"] = measure({**spec, "mode": "disk"})
                if mpx <= args.in_memory_max:
                    row["memory"] = measure({**spec, "mode": "memory"})
                rows.append(row)
                print(markdown_table([row]).splitlines()[-1], flush=True)
            if not args.keep:
                shutil.rmtree(folder)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))
    write_results(args, rows, argv)
    return 0


def _command(argv: list[str] | None) -> str:
    return "python -m benchmarks.product_scale " + " ".join(argv or sys.argv[1:])


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
        "GeoTIFF block by block (its time includes the writing). In memory: the whole product "
        "is read into a scene (the read column), then the scene/patch datamodule maps it into an "
        "in-memory class map, nothing written. Load is the machine's 1-minute load average "
        "before and after each map (the runs share the cores with other jobs; the ratio by CPU "
        "time, all threads of the process, is less sensitive to them). Peak RSS is the "
        "process's own high-water mark (`VmHWM`); the column before it is the same process "
        "before `predict` (Python, torch, TerraTorch, the model): what mapping adds is the "
        "difference; * marks runs measured with `ru_maxrss`, which a child started by `vfork` "
        "inherits from its parent (the benchmark writing the product): an upper bound. Same "
        "random-init one-block SpectralGPT model, PCA route to 12 bands, 32x32 tiles every 16 "
        "pixels, 9x9 patches resized to 16.\n"
    )
    update_markdown_section(args.results_md, "product-scale", "## Products on disk", body)


if __name__ == "__main__":
    sys.exit(main())
