"""Scene-mapping throughput: pixels per second to map all of Indian Pines, both formulations.

Maps every one of the 145 x 145 = 21,025 pixels, end to end as a user would: batches are cut
from the band-routed cube by the plugin's datamodules, moved to the device, run through the
model, and the predicted classes pasted into the (H, W) class map.

- classification: the quickstart's model and data (``configs/experiments/quickstart.yaml``):
  one ``window x window`` patch per pixel (resized to ``img_size``), ``ClassificationTask``,
  one forward sample per pixel;
- segmentation: the shipped ``configs/experiments/indian_pines/segmentation/full.yaml``:
  ``tile_size`` tiles every ``tile_size // 2`` pixels (each pixel taken from the tile whose
  centre is nearest), ``SemanticSegmentationTask`` with a UNet decoder and the per-pixel
  spectral path.

Both are built from their experiment file (:mod:`benchmarks.experiments`, as ``terratorch``
builds them) with the same overrides: the SpectralGPT encoder size (:class:`EncoderSize`), the
classification input side, random weights (speed does not depend on them), the batch size.
Each formulation is timed at the batch size that maps fastest on the machine: a sweep over
``--batch-sizes`` (patches) and ``--tile-batch-sizes`` (tiles) runs first, the candidates of a
formulation taking turns. Then the formulations take turns:
``--warmup`` untimed rounds, then ``--repeats`` timed ones, each mapping the scene once per
formulation. The table gives the median (and min-max) pixels per second; the speed-up is the
median over rounds of the ratio of two maps run back to back, which a change in the machine's
load affects alike.

    python -m benchmarks.scene_mapping --results-md docs/results.md
    python -m benchmarks.scene_mapping --quick
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.docgen.sections import update_markdown_section
from benchmarks.experiments import build, encoder_size, load_experiment, override, quiet
from benchmarks.machine import machine_description
from terratorch_hsi_peft.utils import atomic_write

CLASSIFICATION = "classification"
#: The shipped experiment each formulation's model and data are built from.
EXPERIMENTS = {
    CLASSIFICATION: "quickstart",
    "segmentation": "indian_pines/segmentation/full",
}


@dataclass(frozen=True)
class EncoderSize:
    """The overrides both formulations share: the encoder's size and the classification input.

    Attributes:
        embed_dim, depth, num_heads: encoder width, blocks and attention heads.
        img_size: classification input side (each pixel's patch is resized to it).
        patch_size: spatial side of a token.
    """

    embed_dim: int
    depth: int
    num_heads: int
    img_size: int
    patch_size: int = 8

    def describe(self) -> str:
        """One line naming the encoder and where the models come from, for the report."""
        files = " and ".join(f"configs/experiments/{name}.yaml" for name in EXPERIMENTS.values())
        return (
            f"SpectralGPT encoder embed_dim {self.embed_dim}, depth {self.depth}, "
            f"{self.num_heads} heads, {self.patch_size}x{self.patch_size}x3 tubelets, "
            f"classification patches resized to {self.img_size}x{self.img_size}; models built "
            f"from {files} + these overrides"
        )


#: A small CPU encoder, the released ViT-Base, and ``--quick``'s one block.
SIZES = {
    "small": EncoderSize(embed_dim=32, depth=2, num_heads=2, img_size=16),
    "vit_base": EncoderSize(embed_dim=768, depth=12, num_heads=12, img_size=32),
}
QUICK = EncoderSize(embed_dim=16, depth=1, num_heads=2, img_size=16)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-root",
        type=Path,
        default=Path("../shared/data"),
        help="folder holding indian_pines/ (default: ../shared/data)",
    )
    parser.add_argument(
        "--geometry",
        choices=("small", "vit_base"),
        default="small",
        help="encoder size: a small CPU one (width 32, 2 blocks) or the released ViT-Base",
    )
    parser.add_argument(
        "--batch-sizes",
        type=int,
        nargs="+",
        default=[128, 256, 512, 1024],
        help="patches per batch (classification); with several, the fastest of a side-by-side "
        "sweep is timed",
    )
    parser.add_argument(
        "--tile-batch-sizes",
        type=int,
        nargs="+",
        default=[8, 16, 32, 64],
        help="tiles per batch (segmentation); with several, the fastest of the sweep is timed",
    )
    parser.add_argument(
        "--sweep-repeats", type=int, default=3, help="timed maps per batch size in the sweep"
    )
    parser.add_argument(
        "--extra-inference-strides",
        type=int,
        nargs="*",
        default=[],
        help="more segmentation rows, with predict tiles every this many pixels (the default "
        "row uses the datamodule's default, tile_size // 2)",
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed maps per formulation")
    parser.add_argument("--repeats", type=int, default=5, help="timed maps per formulation")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: torch's; 1 gives steadier timings on a shared CPU)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="CI smoke run: tiny encoder, no warm-up, one timed map"
    )
    parser.add_argument(
        "--results-md", type=Path, help="Markdown file whose Scene mapping section to write"
    )
    parser.add_argument("--json", type=Path, help="write the timings as JSON")
    args = parser.parse_args(argv)
    for name in ("batch_sizes", "tile_batch_sizes"):
        if min(getattr(args, name)) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1.")
    for name in ("repeats", "sweep_repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1.")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1.")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0.")
    if not (args.data_root / "indian_pines").is_dir():
        parser.error(
            f"{args.data_root / 'indian_pines'} does not exist; point --data-root at the folder "
            "holding indian_pines/Indian_pines_corrected.mat and Indian_pines_gt.mat."
        )
    if args.quick:
        args.warmup, args.repeats, args.sweep_repeats = 0, 1, 1
    return args


@torch.inference_mode()
def map_scene(formulation: str, task: Any, datamodule: Any, device: torch.device) -> np.ndarray:
    """The (H, W) class map of the whole scene (class indices; -1 where nothing was pasted)."""
    model = task.model.to(device).eval()
    loader = datamodule.predict_dataloader()
    if formulation == CLASSIFICATION:  # one sample per pixel, in the scene's row-major order
        predictions = []
        for batch in loader:
            # The patch datamodule resizes the windows to img_size on the device.
            batch = datamodule.on_after_batch_transfer(
                {k: v.to(device) for k, v in batch.items()}, 0
            )
            predictions.append(model(batch["image"]).output.argmax(dim=1).cpu())
        return torch.cat(predictions).numpy().reshape(datamodule.scene.shape)
    class_map = np.full(datamodule.scene.shape, -1, dtype=np.int64)
    start = 0
    for batch in loader:
        tiles = model(batch["image"].to(device)).output.argmax(dim=1).cpu()
        datamodule.paste_predictions(class_map, list(range(start, start + len(tiles))), tiles)
        start += len(tiles)
    return class_map


def default_stride() -> int:
    """The segmentation file's distance between predict tiles: half its tile side."""
    data = load_experiment(EXPERIMENTS["segmentation"])["data"]["init_args"]
    return data.get("inference_stride") or max(data["tile_size"] // 2, 1)


def experiment_config(
    formulation: str,
    data_root: Path,
    encoder: EncoderSize,
    batch_size: int,
    folder: Path,
    inference_stride: int | None = None,
) -> dict[str, Any]:
    """The formulation's shipped experiment (:data:`EXPERIMENTS`) with this benchmark's overrides.

    The encoder's size, the classification input side, random weights, the batch size, the
    predict tiles' stride (segmentation; None: the file's), the data folder, and a trainer that
    writes nothing (the benchmark maps with the task's model, without fitting).
    """
    config = load_experiment(EXPERIMENTS[formulation])
    encoder_size(config, encoder.embed_dim, encoder.depth, encoder.num_heads, encoder.patch_size)
    args = "model.init_args.model_args"
    changes: dict[str, Any] = {
        f"{args}.backbone_pretrained": False,
        "data.init_args.root": str(data_root / "indian_pines"),
        "data.init_args.batch_size": batch_size,
        "trainer.default_root_dir": str(folder),
        "trainer.logger": False,
        "trainer.callbacks": [],
    }
    if formulation == CLASSIFICATION:
        changes[f"{args}.backbone_img_size"] = encoder.img_size
        changes["data.init_args.img_size"] = encoder.img_size
    elif inference_stride is not None:
        changes["data.init_args.inference_stride"] = inference_stride
    return override(config, changes)


def prepare(
    formulation: str,
    data_root: Path,
    encoder: EncoderSize,
    batch_size: int,
    inference_stride: int | None = None,
) -> tuple[Any, Any]:
    """The (task, datamodule) of one formulation, band route fitted, ready to map.

    Built by TerraTorch's CLI from :func:`experiment_config`. ``batch_size``: patches or tiles
    per batch. ``inference_stride``: distance between predict tiles (segmentation; None: the
    default).
    """
    with tempfile.TemporaryDirectory() as folder, quiet():
        config = experiment_config(
            formulation, data_root, encoder, batch_size, Path(folder), inference_stride
        )
        cli = build(config, Path(folder))
    cli.datamodule.routed_cube()  # the band route is fitted once, before any timing
    return cli.model, cli.datamodule


def timed_map(formulation: str, task: Any, datamodule: Any, device: torch.device) -> float:
    """Seconds to map the whole scene once; raises if a pixel is left unmapped."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    class_map = map_scene(formulation, task, datamodule, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    if (class_map < 0).any():
        raise RuntimeError(f"{formulation}: {int((class_map < 0).sum())} pixels left unmapped.")
    return seconds


def routes(args: argparse.Namespace) -> dict[str, tuple[str, int | None]]:
    """The rows to time: label -> (formulation, inference stride)."""
    rows: dict[str, tuple[str, int | None]] = {
        CLASSIFICATION: (CLASSIFICATION, None),
        "segmentation": ("segmentation", None),
    }
    for stride in args.extra_inference_strides:
        if stride != default_stride():
            rows[f"segmentation, stride {stride}"] = ("segmentation", stride)
    return rows


def sweep_batch_sizes(
    data_root: Path, encoder: EncoderSize, args: argparse.Namespace, device: torch.device
) -> dict[str, dict[int, float]]:
    """Median seconds per map of each formulation at each candidate batch size.

    The candidates of a formulation take turns (one untimed round, then ``--sweep-repeats``
    timed ones), so that each is timed under the same load; a single candidate is not swept.
    """
    candidates = {CLASSIFICATION: args.batch_sizes, "segmentation": args.tile_batch_sizes}
    sweep: dict[str, dict[int, float]] = {}
    for formulation, sizes in candidates.items():
        if len(sizes) == 1:
            continue
        prepared = {size: prepare(formulation, data_root, encoder, size) for size in sizes}
        seconds: dict[int, list[float]] = {size: [] for size in sizes}
        for index in range(1 + args.sweep_repeats):
            for size, (task, datamodule) in prepared.items():
                elapsed = timed_map(formulation, task, datamodule, device)
                if index:
                    seconds[size].append(elapsed)
        sweep[formulation] = {size: statistics.median(seconds[size]) for size in sizes}
    return sweep


def fastest(sweep: dict[str, dict[int, float]], args: argparse.Namespace) -> dict[str, int]:
    """The batch size each formulation is timed with: its fastest in the sweep."""
    picks = {CLASSIFICATION: args.batch_sizes[0], "segmentation": args.tile_batch_sizes[0]}
    for formulation, medians in sweep.items():
        picks[formulation] = min(medians, key=medians.__getitem__)
    return picks


def sweep_sentence(sweep: dict[str, dict[int, float]], picks: dict[str, int]) -> str:
    """Markdown: each formulation's median seconds per map at each swept batch size."""
    names = {CLASSIFICATION: "patches", "segmentation": "tiles"}
    parts = [
        f"{names[formulation]} per batch "
        + ", ".join(f"{size}: {seconds:.2f} s" for size, seconds in medians.items())
        + f" (timed at {picks[formulation]})"
        for formulation, medians in sweep.items()
    ]
    return "; ".join(parts)


def time_formulations(
    data_root: Path,
    encoder: EncoderSize,
    args: argparse.Namespace,
    device: torch.device,
    batch_sizes: dict[str, int],
) -> tuple[list[dict[str, Any]], dict[str, list[float]]]:
    """Map the scene ``warmup + repeats`` times per row, the rows taking turns.

    ``batch_sizes``: patches and tiles per batch (keys ``classification``, ``segmentation``).

    Returns one result per row (pixels per second of its timed maps) and, for each
    segmentation row, how many times faster it mapped than classification in each timed
    round: each ratio compares maps run back to back, so a change in the machine's load
    affects both.
    """
    prepared = {
        label: (
            formulation,
            *prepare(formulation, data_root, encoder, batch_sizes[formulation], stride),
        )
        for label, (formulation, stride) in routes(args).items()
    }
    seconds: dict[str, list[float]] = {label: [] for label in prepared}
    for index in range(args.warmup + args.repeats):
        for label, (formulation, task, datamodule) in prepared.items():
            elapsed = timed_map(formulation, task, datamodule, device)
            if index >= args.warmup:
                seconds[label].append(elapsed)
    results = []
    for label, (formulation, _, datamodule) in prepared.items():
        pixels = datamodule.scene.shape[0] * datamodule.scene.shape[1]
        rates = [pixels / s for s in seconds[label]]
        classifying = formulation == CLASSIFICATION
        size = datamodule.img_size if classifying else datamodule.tile_size
        results.append(
            {
                "formulation": label,
                "inference_stride": None if classifying else datamodule.inference_stride,
                "pixels": pixels,
                "forward_samples": len(datamodule.predict_dataset),
                "model_input": [datamodule.num_bands + datamodule.num_spectra, size, size],
                "batch_size": datamodule.batch_size,
                "seconds": seconds[label],
                "median_pixels_per_second": statistics.median(rates),
                "min_pixels_per_second": min(rates),
                "max_pixels_per_second": max(rates),
                "median_seconds": statistics.median(seconds[label]),
            }
        )
    ratios = {
        label: [c / t for c, t in zip(seconds[CLASSIFICATION], seconds[label], strict=True)]
        for label in prepared
        if label != CLASSIFICATION
    }
    return results, ratios


def markdown_table(results: list[dict[str, Any]]) -> str:
    """One row per formulation: samples, seconds and pixels per second (median, min-max)."""
    lines = [
        "| Formulation | Forward samples | Model input | Median s / map | Pixels/s median "
        "(min-max) |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        shape = "x".join(str(v) for v in r["model_input"])
        lines.append(
            f"| {r['formulation']} | {r['forward_samples']:,} | {shape} | "
            f"{r['median_seconds']:.2f} | {r['median_pixels_per_second']:,.0f} "
            f"({r['min_pixels_per_second']:,.0f}-{r['max_pixels_per_second']:,.0f}) |"
        )
    return "\n".join(lines)


def speedup_line(ratios: list[float]) -> str:
    """Segmentation's speed over classification's: median and range over the timed rounds."""
    return (
        f"{statistics.median(ratios):.1f}x (median of {len(ratios)} "
        f"round{'s' if len(ratios) > 1 else ''}; "
        f"{min(ratios):.1f}-{max(ratios):.1f}x)"
    )


def speedup_sentences(ratios: dict[str, list[float]], results: list[dict[str, Any]]) -> str:
    """One sentence per segmentation row: its speed over classification's."""
    strides = {r["formulation"]: r["inference_stride"] for r in results}
    default = ratios["segmentation"]
    sentences = [f"The segmentation formulation maps the scene {speedup_line(default)} faster"]
    for label, values in ratios.items():
        if label != "segmentation":
            sentences.append(f"with tiles every {strides[label]} pixels, {speedup_line(values)}")
    return "; ".join(sentences) + "."


def results_section(
    args: argparse.Namespace,
    encoder: EncoderSize,
    results: list[dict[str, Any]],
    ratios: dict[str, list[float]],
    command: str,
    sweep: dict[str, dict[int, float]],
    picks: dict[str, int],
) -> str:
    """The Markdown of the Scene mapping section."""
    return "\n".join(
        [
            "Produced by `benchmarks/scene_mapping.py`: time to map all 145 x 145 = 21,025 "
            "pixels of Indian Pines, from the band-routed cube to the pasted class map.",
            "",
            f"- Command: `{command}`",
            f"- Machine: {machine_description()}",
            f"- Encoder: {encoder.describe()} (same encoder in both formulations; random "
            "weights, which do not change the speed).",
            f"- Batches: {picks[CLASSIFICATION]} patches (classification), "
            f"{picks['segmentation']} tiles (segmentation: predict tiles every "
            f"{default_stride()} pixels, the default, unless the row says otherwise)"
            + (
                ", each formulation's fastest in a sweep run first, its candidates taking "
                f"turns ({args.sweep_repeats} timed maps each; median seconds per map: "
                f"{sweep_sentence(sweep, picks)})"
                if sweep
                else ""
            )
            + f"; {args.warmup} untimed warm-up round(s), then {args.repeats} timed rounds, "
            "each mapping the scene once per row, back to back.",
            "",
            markdown_table(results),
            "",
            f"{speedup_sentences(ratios, results)} Tiles run one forward per tile instead of "
            "one per pixel. Shared CPU: absolute numbers vary with the load of the machine; "
            "the ratios compare maps run back to back.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Time both formulations, print the table, write the optional JSON and Markdown section."""
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    encoder = QUICK if args.quick else SIZES[args.geometry]
    sweep = sweep_batch_sizes(args.data_root, encoder, args, device)
    picks = fastest(sweep, args)
    if sweep:
        print(f"Batch-size sweep, median seconds per map: {sweep_sentence(sweep, picks)}")
    results, ratios = time_formulations(args.data_root, encoder, args, device, picks)
    table = markdown_table(results)
    print(table, flush=True)
    print(speedup_sentences(ratios, results), flush=True)
    command = "python -m benchmarks.scene_mapping " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    if args.json is not None:
        payload = {
            "command": command,
            "machine": machine_description(),
            "geometry": asdict(encoder),
            "experiments": {k: f"configs/experiments/{v}.yaml" for k, v in EXPERIMENTS.items()},
            "results": results,
            "speedup_per_round": ratios,
            "batch_size_sweep_median_seconds": sweep,
        }
        with atomic_write(args.json, "w") as f:
            json.dump(payload, f, indent=1)
    if args.results_md is not None:
        body = results_section(args, encoder, results, ratios, command, sweep, picks)
        update_markdown_section(args.results_md, "scene-mapping", "## Scene mapping", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
