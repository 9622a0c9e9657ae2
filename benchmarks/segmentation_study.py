"""Segmentation study: what makes the tile formulation collapse on spatially disjoint splits.

Every configuration starts from the segmentation formulation of ``benchmarks/accuracy.py``
(``HyperspectralSceneDataModule`` with 32x32 tiles every 16 pixels, ``SemanticSegmentationTask``,
the small random-init SpectralGPT with 8x8x3 tubelets, four layers -> pyramid -> ``UNetDecoder``,
AdamW lr 1e-3, no augmentation, the model after the last step tested) and changes one thing:

- ``patch_4``: 4x4x3 tubelets instead of 8x8x3 (token size against field size);
- ``tile_16``: 16x16 tiles (every 8 pixels) instead of 32x32;
- ``stride_4``: training tiles start every 4 pixels instead of 16, so a field appears at many
  places of a tile (tile sampling; more, more overlapping tiles);
- ``flips``: ``RandomFlipRotate`` on training tiles and their masks;
- ``label_smoothing``: cross-entropy with label smoothing 0.1;
- ``weight_decay``: AdamW weight decay 0.05 (the shipped configs' value) instead of 0.01;
- ``class_weights``: the datamodule's inverse-frequency class weights (class imbalance);
- ``spectral_path``: a per-pixel path (a per-pixel MLP, 32 channels) from the input spectra added to
  the decoder's output (``model_args.spectral_path: {width: 32}``; a decoder with a full-resolution
  spectral skip);
- ``full_spectrum``: the spectral path (as ``spectral_path``) reads each pixel's whole z-scored
  spectrum (200 bands), which the datamodule appends after the 12 principal components
  (``append_spectra: true``, ``model_args.spectral_path.bands: 200``);
- ``inference_24``: test tiles every 24 pixels instead of 16 (``inference_stride: 24``; the
  training is unchanged, the same seed gives the same model): 2.25x fewer tiles to map a scene,
  each pixel taken at least 4 pixels inside its tile instead of 8;
- ``path_loss`` (after ``spectral_path`` or ``full_spectrum``): the path's own logits (the
  head applied to the path alone) are an auxiliary output with their own cross-entropy,
  weighted 1.0 (``model_args.spectral_path.loss: true``, the task's
  ``aux_loss: {spectral_path: 1.0}``), so that the path learns to classify on its own;
- ``path_lr`` (after ``spectral_path`` or ``full_spectrum``): the path's parameters learn at
  1e-2 instead of 1e-3 (the task's ``lr_overrides: {spectral_path: 1.0e-2}``);
- ``path_window`` (after ``spectral_path`` or ``full_spectrum``): the path's output is averaged
  over each pixel's 5x5 neighbours (``model_args.spectral_path.window: 5``);
- ``val_best``: 15% of the training side's labelled pixels held out as validation blocks
  (``val_fraction``), validated every ``--steps // 6`` steps; the weights of lowest validation
  loss are tested (validation and early stopping);
- ``a+b+...``: the changes ``a``, ``b``, ... together (e.g. ``spectral_path+flips``).

Each configuration trains for ``--steps`` optimizer steps of 8 tiles on the split protocols of
``--splits`` (default: spatially disjoint) and every seed, on the splits ``accuracy.py`` draws
(the same test pixels), and is scored on the
split's test pixels; the report also gives each class's test accuracy on the disjoint split.
Runs are appended to a JSON-lines file as they finish (``--runs``); a rerun skips the runs
already there, and ``--report-only`` rebuilds the Markdown section from them.

    nice -n 5 python -m benchmarks.segmentation_study --splits spatially_disjoint per_class \\
        --runs benchmarks/results/segmentation_runs_180_steps.jsonl \\
        --results-md docs/segmentation.md
    nice -n 5 python -m benchmarks.segmentation_study --splits per_class spatially_disjoint \\
        --factors baseline spectral_path+flips --steps 720 \\
        --runs benchmarks/results/segmentation_runs_720_steps.jsonl \\
        --results-md docs/segmentation.md --section segmentation-study-720 \\
        --heading "### Longer runs: 720 steps"
    python -m benchmarks.segmentation_study --quick          # CI smoke run

The 720-step runs the docs show are in that second file at commit d36c417 (``git show
d36c417:benchmarks/results/segmentation_runs_720_steps.jsonl``): the tree keeps one runs file
per study, the one its main section is built from.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from benchmarks.accuracy import draw_split, make_trainer, scores
from benchmarks.docgen.sections import update_markdown_section
from benchmarks.hsi_models import (
    PATH_LOSS_WEIGHT,
    PATH_LR,
    PATH_WINDOW,
    QUICK,
    SMALL,
    build_task,
    check_data_root,
    machine_description,
    predict_tiles,
    quiet_libraries,
)
from benchmarks.recipe_study import baseline_oa, load_runs, markdown_table, split_stats
from terratorch_hsi_peft.datamodules import IGNORE_INDEX, HyperspectralSceneDataModule
from terratorch_hsi_peft.datasets import IndianPines, make_split
from terratorch_hsi_peft.metrics import confusion_matrix

SPLITS = ("per_class", "spatially_disjoint")
FACTORS = (
    "baseline",
    "patch_4",
    "tile_16",
    "stride_4",
    "flips",
    "label_smoothing",
    "weight_decay",
    "class_weights",
    "val_best",
    "spectral_path",
    "full_spectrum",
    "inference_24",
)
#: Changes that refine the spectral path: joined after ``spectral_path`` or ``full_spectrum``.
PATH_REFINEMENTS = ("path_loss", "path_lr", "path_window")
FLIPS = {"class_path": "terratorch_hsi_peft.transforms.RandomFlipRotate", "init_args": {"p": 0.5}}
TILE_BATCH = 8
#: The formulation before the study: the grid's encoders without the spectral path.
PATH_OFF = {
    "spectral_path": None,
    "full_spectrum": None,
    "path_loss": None,
    "path_lr": None,
    "path_window": None,
}
BASELINE = dataclasses.replace(SMALL, **PATH_OFF)
BASELINE_QUICK = dataclasses.replace(QUICK, **PATH_OFF)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--splits", nargs="+", choices=SPLITS, default=["spatially_disjoint"])
    parser.add_argument(
        "--factors",
        nargs="+",
        default=list(FACTORS),
        help=f"configurations: {', '.join(FACTORS)}, or changes joined by '+'",
    )
    parser.add_argument("--steps", type=int, default=180, help="optimizer steps per run")
    parser.add_argument("--runs", type=Path, help="JSON-lines file of finished runs (resumable)")
    parser.add_argument("--results-md", type=Path, help="Markdown file whose section to write")
    parser.add_argument("--report-only", action="store_true", help="only rebuild the report")
    parser.add_argument(
        "--section",
        default="segmentation-study",
        help="name of the --results-md section (another name keeps the main one)",
    )
    parser.add_argument("--heading", default="## Segmentation study", help="its heading")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 steps, tiny encoder")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be >= 1.")
    if args.report_only and args.runs is None:
        parser.error("--report-only needs --runs (the file of finished runs).")
    if not args.report_only:
        check_data_root(parser, args.data_root)
    for factor in args.factors:
        unknown = [part for part in factor.split("+") if part not in (*FACTORS, *PATH_REFINEMENTS)]
        if unknown:
            choices = ", ".join((*FACTORS, *PATH_REFINEMENTS))
            parser.error(f"--factors {factor}: unknown {unknown}; use {choices}.")
    if args.quick:
        args.seeds, args.steps = args.seeds[:1], 2
    return args


def configure(factor: str, quick: bool) -> dict[str, Any]:
    """The knobs of one configuration: geometry, datamodule and task arguments, validation."""
    config: dict[str, Any] = {
        "geometry": BASELINE_QUICK if quick else BASELINE,
        "data": {},
        "task": {},
        "val_fraction": 0.0,
    }
    for change in factor.split("+"):
        _apply(change, config)
    return config


def _apply(change: str, config: dict[str, Any]) -> None:
    data, task = config["data"], config["task"]
    if change == "patch_4":
        config["geometry"] = dataclasses.replace(config["geometry"], patch_size=4)
    elif change == "tile_16":
        config["geometry"] = dataclasses.replace(config["geometry"], tile_size=16)
    elif change == "stride_4":
        data["train_stride"] = 4
    elif change == "flips":
        data["train_transform"] = [FLIPS]
    elif change == "label_smoothing":
        # SemanticSegmentationTask takes a loss module from Python (not from YAML).
        task["loss"] = torch.nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX, label_smoothing=0.1)
    elif change == "weight_decay":
        task["optimizer_hparams"] = {"weight_decay": 0.05}
    elif change == "class_weights":
        data["class_weights"] = True
    elif change == "spectral_path":
        config["geometry"] = dataclasses.replace(config["geometry"], spectral_path=32)
    elif change == "full_spectrum":
        config["geometry"] = dataclasses.replace(
            config["geometry"], spectral_path=32, full_spectrum=True
        )
        data["append_spectra"] = True
    elif change in PATH_REFINEMENTS:
        if not config["geometry"].spectral_path:
            raise ValueError(
                f"{change} refines the spectral path: join it after spectral_path or "
                f"full_spectrum (e.g. full_spectrum+{change})."
            )
        value = {"path_loss": PATH_LOSS_WEIGHT, "path_lr": PATH_LR, "path_window": PATH_WINDOW}
        config["geometry"] = dataclasses.replace(config["geometry"], **{change: value[change]})
    elif change == "inference_24":
        data["inference_stride"] = 24
    elif change == "val_best":
        config["val_fraction"] = 0.15
    elif change != "baseline":
        raise ValueError(
            f"Unknown factor {change!r}; choose among {FACTORS} (and {PATH_REFINEMENTS})."
        )


def deep_run(
    factor: str, protocol: str, seed: int, scene: Any, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    """Train one configuration on one split and seed; score it on the split's test pixels."""
    config = configure(factor, args.quick)
    geometry = config["geometry"]
    split = draw_split(scene, protocol, seed, geometry.window)
    if config["val_fraction"]:
        # Validation from the training side; the test side is drawn as without it.
        extra = (
            {"train_size": 0.1, "val_size": config["val_fraction"]}
            if protocol == "per_class"
            else {"patch_size": geometry.window, "val_fraction": config["val_fraction"]}
        )
        split = make_split(scene.labels, protocol, seed, **extra)
    split_file = workdir / f"{factor}_{protocol}_{seed}.npz"
    split.save(split_file)
    datamodule = HyperspectralSceneDataModule(
        scene=scene,
        split_file=str(split_file),
        batch_size=TILE_BATCH,
        tile_size=geometry.tile_size,
        **config["data"],
    )
    pl.seed_everything(seed, verbose=False)
    task = build_task(
        "segmentation",
        geometry,
        datamodule.num_bands,
        datamodule.num_classes,
        "FULL",
        1e-3,
        spectra=datamodule.num_spectra,
        **config["task"],
    )
    best = None
    if config["val_fraction"]:
        best = ModelCheckpoint(
            dirpath=workdir / f"ckpt_{factor}_{protocol}_{seed}",
            monitor="val/loss",
            save_weights_only=True,
        )
        trainer = pl.Trainer(
            max_steps=args.steps,
            max_epochs=-1,
            accelerator="cpu",
            devices=1,
            logger=False,
            callbacks=[best],
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            val_check_interval=max(args.steps // 6, 1),
            check_val_every_n_epoch=None,
        )
    else:
        trainer = make_trainer(args.steps, torch.device("cpu"))
    start = time.perf_counter()
    trainer.fit(task, datamodule=datamodule)
    fit_seconds = time.perf_counter() - start
    if best is not None and best.best_model_path:
        state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)
        task.load_state_dict(state["state_dict"])
    predictions, targets = predict_tiles(
        task, datamodule, "test", torch.device("cpu"), 2 if args.quick else None
    )
    matrix = confusion_matrix(targets, predictions, datamodule.num_classes)
    with np.errstate(invalid="ignore"):
        per_class = matrix.diagonal() / matrix.sum(axis=1)
    return {
        "factor": factor,
        "split": protocol,
        "seed": seed,
        **scores(targets, predictions, datamodule.num_classes),
        "per_class": [None if np.isnan(v) else round(100 * float(v), 1) for v in per_class],
        "train_pixels": len(datamodule.split.train),
        "test_pixels": len(targets),
        "fit_seconds": fit_seconds,
        "torch_threads": torch.get_num_threads(),
    }


def summarise(runs: list[dict[str, Any]], splits: list[str]) -> list[dict[str, Any]]:
    """The recipe study's statistics per configuration and split, plus each class's accuracy."""
    baseline = baseline_oa(runs)
    combos = sorted({r["factor"] for r in runs} - set(FACTORS), key=lambda f: (f.count("+"), f))
    rows = []
    for factor in [*FACTORS, *combos]:
        row: dict[str, Any] = {"factor": factor, "splits": {}}
        for split in splits:
            mine = [r for r in runs if r["factor"] == factor and r["split"] == split]
            if not mine:
                continue
            stats = split_stats(mine, split, baseline)
            classes = np.array([[np.nan if v is None else v for v in r["per_class"]] for r in mine])
            with warnings.catch_warnings():  # a class without test pixels in every seed
                warnings.simplefilter("ignore", RuntimeWarning)
                stats["per_class"] = np.nanmean(classes, axis=0).tolist()
            row["splits"][split] = stats
        if row["splits"]:
            rows.append(row)
    return rows


def per_class_table(rows: list[dict[str, Any]], split: str, class_names: list[str]) -> str:
    """Test accuracy of each class (mean over seeds, %) of every configuration on ``split``."""
    mine = [row for row in rows if split in row["splits"]]
    header = ["Class", *[f"`{row['factor']}`" for row in mine]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for k, name in enumerate(class_names):
        cells = [f"{k + 1} {name}"]
        for row in mine:
            value = row["splits"][split]["per_class"][k]
            cells.append("-" if np.isnan(value) else f"{value:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def report(args: argparse.Namespace, runs: list[dict[str, Any]], class_names: list[str]) -> str:
    """The generated part of the study's section: setup, table, per-class table."""
    rows = summarise(runs, args.splits)
    geometry = BASELINE_QUICK if args.quick else BASELINE
    lines = [
        "Produced by `benchmarks/segmentation_study.py` "
        f"(`--steps {args.steps}`, seeds {args.seeds}).",
        "",
        f"- Machine: {machine_description(run_threads=[r.get('torch_threads') for r in runs])}",
        f"- Baseline: the segmentation formulation of the Accuracy section: {geometry.describe()}"
        f", tiles every {geometry.tile_size // 2} pixels, UNet decoder, random init, AdamW lr "
        f"1e-3 (weight decay 0.01), {args.steps} steps of {TILE_BATCH} tiles, no augmentation, "
        "the model after the last step tested. Each row changes one thing (see the script's "
        "docstring); `a+b` makes the changes `a` and `b` together.",
        "- Splits: those of `benchmarks/accuracy.py` (the same test pixels); training tiles "
        "hide validation and test blocks (`hide_held_out`).",
        "- ΔOA: OA minus the baseline's OA on the same split and seed, mean ± std over seeds.",
        "",
        markdown_table(rows, args.splits, fit_seconds=True),
    ]
    if "spatially_disjoint" in args.splits:
        lines += [
            "",
            "Test accuracy per class on the spatially disjoint split (%, mean over seeds; "
            "`-`: no test pixel of the class in any seed):",
            "",
            per_class_table(rows, "spatially_disjoint", class_names),
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the missing runs, print the table, write the optional Markdown section."""
    args = parse_args(argv)
    quiet_libraries()
    runs = load_runs(args.runs)
    done = {(r["factor"], r["split"], r["seed"]) for r in runs}
    started = time.perf_counter()
    scene = IndianPines(args.data_root / "indian_pines")
    if not args.report_only:
        with tempfile.TemporaryDirectory(prefix="segmentation_study_") as workdir:
            # Seed-major: a study cut short still has every configuration on the first seeds.
            for seed in args.seeds:
                for factor in args.factors:
                    for protocol in args.splits:
                        if (factor, protocol, seed) in done:
                            continue
                        run = deep_run(factor, protocol, seed, scene, args, Path(workdir))
                        runs.append(run)
                        if args.runs is not None:
                            args.runs.parent.mkdir(parents=True, exist_ok=True)
                            with args.runs.open("a") as f:  # one line per run: resumable
                                f.write(json.dumps(run) + "\n")
                        log(
                            f"{factor:16s} {protocol:18s} seed {seed}: OA {run['oa']:5.1f} "
                            f"AA {run['aa']:5.1f} (fit {run['fit_seconds']:.0f} s, "
                            f"{time.perf_counter() - started:.0f} s elapsed)"
                        )
    print(markdown_table(summarise(runs, args.splits), args.splits, fit_seconds=True), flush=True)
    if args.results_md is not None:
        update_markdown_section(
            args.results_md,
            args.section,
            args.heading,
            report(args, runs, scene.class_names),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
