"""Scene-mapping throughput: pixels per second to map all of Indian Pines, both formulations.

Maps every one of the 145 x 145 = 21,025 pixels, end to end as a user would: batches are cut
from the band-routed cube by the plugin's datamodules, moved to the device, run through the
model, and the predicted classes pasted into the (H, W) class map.

- classification: one ``window x window`` patch per pixel (resized to ``img_size``),
  ``ClassificationTask`` model, one forward sample per pixel;
- segmentation: ``tile_size`` tiles every ``tile_size // 2`` pixels (each pixel taken from the
  tile whose centre is nearest), ``SemanticSegmentationTask`` model with a UNet decoder and
  the per-pixel spectral path (the accuracy grid's segmentation model).

Both use the same SpectralGPT encoder size (the accuracy benchmark's, random init: speed does
not depend on the weights). Each formulation is timed at the batch size that maps fastest on
the machine: a sweep over ``--batch-sizes`` (patches) and ``--tile-batch-sizes`` (tiles) runs
first, the candidates of a formulation taking turns. Then the formulations take turns:
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
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.docgen.sections import update_markdown_section
from benchmarks.hsi_models import (
    QUICK,
    SMALL,
    VIT_BASE,
    Geometry,
    build_task,
    check_data_root,
    machine_description,
    predict_patches,
    predict_tiles,
    quiet_libraries,
)
from terratorch_hsi_peft.datamodules import (
    HyperspectralPatchDataModule,
    HyperspectralSceneDataModule,
)
from terratorch_hsi_peft.datasets import IndianPines
from terratorch_hsi_peft.utils import atomic_write

CLASSIFICATION = "classification"


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
        help="encoder size: the accuracy grid's (small) or the released ViT-Base",
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
    check_data_root(parser, args.data_root)
    if args.quick:
        args.warmup, args.repeats, args.sweep_repeats = 0, 1, 1
    return args


def map_scene(formulation: str, task: Any, datamodule: Any, device: torch.device) -> np.ndarray:
    """The (H, W) class map of the whole scene (class indices)."""
    if formulation == "classification":
        predictions, _ = predict_patches(task, datamodule, "predict", device)
        return predictions.reshape(datamodule.scene.shape)
    class_map, _ = predict_tiles(task, datamodule, "predict", device)
    return class_map


def prepare(
    formulation: str,
    scene: IndianPines,
    geometry: Geometry,
    batch_size: int,
    inference_stride: int | None = None,
) -> tuple[Any, Any]:
    """The (task, datamodule) of one formulation, band route fitted, ready to map.

    ``batch_size``: patches or tiles per batch. ``inference_stride``: distance between predict
    tiles (segmentation; None: the default).
    """
    if formulation == "classification":
        datamodule = HyperspectralPatchDataModule(
            scene=scene,
            batch_size=batch_size,
            patch_size=geometry.window,
            img_size=geometry.img_size,
        )
    else:
        datamodule = HyperspectralSceneDataModule(
            scene=scene,
            batch_size=batch_size,
            tile_size=geometry.tile_size,
            append_spectra=bool(geometry.full_spectrum),
            inference_stride=inference_stride,
        )
    torch.manual_seed(0)
    task = build_task(
        formulation,
        geometry,
        datamodule.num_bands,
        datamodule.num_classes,
        "FULL",
        1e-3,
        spectra=datamodule.num_spectra,
    )
    datamodule.routed_cube()  # the band route is fitted once, before any timing
    return task, datamodule


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


def routes(geometry: Geometry, args: argparse.Namespace) -> dict[str, tuple[str, int | None]]:
    """The rows to time: label -> (formulation, inference stride)."""
    rows: dict[str, tuple[str, int | None]] = {
        CLASSIFICATION: (CLASSIFICATION, None),
        "segmentation": ("segmentation", None),
    }
    for stride in args.extra_inference_strides:
        if stride != geometry.tile_size // 2:
            rows[f"segmentation, stride {stride}"] = ("segmentation", stride)
    return rows


def sweep_batch_sizes(
    scene: IndianPines, geometry: Geometry, args: argparse.Namespace, device: torch.device
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
        prepared = {size: prepare(formulation, scene, geometry, size) for size in sizes}
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
    scene: IndianPines,
    geometry: Geometry,
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
            *prepare(formulation, scene, geometry, batch_sizes[formulation], stride),
        )
        for label, (formulation, stride) in routes(geometry, args).items()
    }
    seconds: dict[str, list[float]] = {label: [] for label in prepared}
    for index in range(args.warmup + args.repeats):
        for label, (formulation, task, datamodule) in prepared.items():
            elapsed = timed_map(formulation, task, datamodule, device)
            if index >= args.warmup:
                seconds[label].append(elapsed)
    pixels = scene.shape[0] * scene.shape[1]
    results = []
    for label, (formulation, _, datamodule) in prepared.items():
        rates = [pixels / s for s in seconds[label]]
        classifying = formulation == CLASSIFICATION
        size = geometry.img_size if classifying else geometry.tile_size
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
    geometry: Geometry,
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
            f"- Encoder: {geometry.describe()} (same encoder in both formulations; random "
            "weights, which do not change the speed).",
            f"- Batches: {picks[CLASSIFICATION]} patches (classification), "
            f"{picks['segmentation']} tiles (segmentation: predict tiles every "
            f"{geometry.tile_size // 2} pixels, the default, unless the row says otherwise)"
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
    quiet_libraries()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    geometry = QUICK if args.quick else {"small": SMALL, "vit_base": VIT_BASE}[args.geometry]
    scene = IndianPines(args.data_root / "indian_pines")
    sweep = sweep_batch_sizes(scene, geometry, args, device)
    picks = fastest(sweep, args)
    if sweep:
        print(f"Batch-size sweep, median seconds per map: {sweep_sentence(sweep, picks)}")
    results, ratios = time_formulations(scene, geometry, args, device, picks)
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
            "geometry": asdict(geometry),
            "results": results,
            "speedup_per_round": ratios,
            "batch_size_sweep_median_seconds": sweep,
        }
        with atomic_write(args.json, "w") as f:
            json.dump(payload, f, indent=1)
    if args.results_md is not None:
        body = results_section(args, geometry, results, ratios, command, sweep, picks)
        update_markdown_section(args.results_md, "scene-mapping", "## Scene mapping", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
