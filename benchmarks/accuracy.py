"""Accuracy benchmark on Indian Pines: every method, both formulations, two splits, several seeds.

For each split protocol (``per_class``: 10% of each class for training, the literature's;
``spatially_disjoint``: whole 16x16 blocks held out, with a buffer so that no training window
touches a test pixel) and each seed, it trains and tests:

- the classification formulation (a patch per pixel, ``ClassificationTask``) with every method of
  the published grid: full fine-tuning (``FULL``), ``LORA``, ``LORA_PLUS``, ``KRONA``,
  ``KRONA_PLUS``, ``LOKR`` (``--methods`` takes any registered method too);
- the segmentation formulation (tiles, ``SemanticSegmentationTask``: UNet plus a per-pixel
  spectral path, flips and right-angle rotations of training tiles; see docs/segmentation.md)
  with the same methods (or those of ``--seg-methods``);
- an RBF SVM and a random forest on the standardised spectra of the same training pixels.

Every model of a formulation trains for the same number of AdamW steps (``--steps``,
``--seg-steps``); classification models at a constant learning rate, segmentation models with a
cosine decay to zero at their last step, as the shipped configs (``--schedule``,
``--seg-schedule``).

It prints a Markdown table of OA / AA / kappa (mean +- std over seeds, in %) and can write it into
``docs/results.md`` (``--results-md``) with two plots (``--img-dir``): accuracy against trainable
parameters, and class maps of seed 0 next to the ground truth.

Without ``--ckpt-path`` the encoder is a small randomly initialised SpectralGPT: adapters on a
frozen random encoder measure little, and the full fine-tuning row (trained from scratch) is the
honest reference. ``--ckpt-path SpectralGPT+.pth`` runs the same grid with the official
weights (ViT-Base geometry unless overridden).

    python -m benchmarks.accuracy --results-md docs/results.md       # full grid
    python -m benchmarks.accuracy --quick                             # CI smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from benchmarks.docgen.sections import update_markdown_section
from benchmarks.hsi_models import (
    METHODS,
    QUICK,
    SMALL,
    VIT_BASE,
    Geometry,
    build_task,
    check_data_root,
    machine_description,
    method_choices,
    predict_patches,
    predict_tiles,
    quiet_libraries,
    trainable_parameters,
)
from terratorch_hsi_peft.callbacks.class_map_writer import class_colours
from terratorch_hsi_peft.datamodules import (
    HyperspectralPatchDataModule,
    HyperspectralSceneDataModule,
)
from terratorch_hsi_peft.datasets import HyperspectralScene, IndianPines, Split, make_split
from terratorch_hsi_peft.metrics import (
    average_accuracy,
    cohen_kappa,
    confusion_matrix,
    overall_accuracy,
)
from terratorch_hsi_peft.transforms import RandomFlipRotate
from terratorch_hsi_peft.utils import atomic_write

SPLITS = ("per_class", "spatially_disjoint")
SCHEDULES = ("cosine", "constant")
#: ``--quick`` scores this many test batches per model.
QUICK_TEST_BATCHES = 4
CLASSIC = ("SVM_RBF", "RANDOM_FOREST")


@dataclass
class Run:
    """One trained and tested model (or classical baseline) on one split and seed."""

    formulation: str
    method: str
    split: str
    seed: int
    oa: float
    aa: float
    kappa: float
    trainable_encoder: int
    trainable_total: int
    train_pixels: int
    test_pixels: int
    fit_seconds: float
    checkpoint_tensors: int = 0
    torch_threads: int | None = None
    schedule: str | None = None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-root",
        type=Path,
        default=Path("../shared/data"),
        help="folder holding indian_pines/ (default: ../shared/data)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS))
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=method_choices(),
        default=list(METHODS),
        help="FULL and any registered adapter method (default: the published grid)",
    )
    parser.add_argument(
        "--steps", type=int, default=100, help="optimizer steps per classification model"
    )
    parser.add_argument(
        "--seg-steps", type=int, default=60, help="optimizer steps per segmentation model"
    )
    parser.add_argument(
        "--seg-methods",
        nargs="+",
        choices=method_choices(),
        default=list(METHODS),
        help="methods of the segmentation rows (default: the published grid)",
    )
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    parser.add_argument(
        "--schedule",
        choices=SCHEDULES,
        default="constant",
        help="learning rate of the classification models over their steps: constant (default: "
        "at the grid's few hundred steps a decay costs them 3-10 points) or cosine to zero "
        "at the last step",
    )
    parser.add_argument(
        "--seg-schedule",
        choices=SCHEDULES,
        default="cosine",
        help="the same for the segmentation models: cosine (default, as the shipped configs; "
        "with a constant rate the last step's model is one point of a noisy trajectory) or "
        "constant",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--ckpt-path",
        help="official SpectralGPT checkpoint (e.g. SpectralGPT+.pth) for the encoder",
    )
    parser.add_argument("--embed-dim", type=int, help="encoder width (default 32; 768 with a ckpt)")
    parser.add_argument("--depth", type=int, help="encoder blocks (default 2; 12 with a ckpt)")
    parser.add_argument("--num-heads", type=int, help="attention heads (default 2; 12 with a ckpt)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="CI smoke run: tiny encoder, first seed, 2 steps, test subsets",
    )
    parser.add_argument(
        "--results-md", type=Path, help="Markdown file whose Accuracy section to write"
    )
    parser.add_argument(
        "--img-dir", type=Path, help="folder for the PNG plots (default: img/ beside --results-md)"
    )
    parser.add_argument("--json", type=Path, help="write every run and the summary as JSON")
    parser.add_argument(
        "--runs",
        type=Path,
        help="JSON-lines file of finished runs: appended as runs finish, a rerun skips them",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: table and section from --runs (with the grid's own flags)",
    )
    args = parser.parse_args(argv)
    for name in ("steps", "seg_steps", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1.")
    check_data_root(parser, args.data_root)
    if args.ckpt_path is not None and not Path(args.ckpt_path).is_file():
        parser.error(f"--ckpt-path {args.ckpt_path} is not a file; give the official .pth file.")
    if args.report_only and args.runs is None:
        parser.error("--report-only needs --runs (the file of finished runs).")
    try:  # before any training: a runs file of another schedule would be mixed in
        load_runs(args.runs, schedules_of(args))
    except ValueError as error:
        parser.error(str(error))
    if args.quick:
        args.seeds, args.steps, args.seg_steps = args.seeds[:1], 2, 2
    if args.img_dir is None and args.results_md is not None:
        args.img_dir = args.results_md.parent / "img"
    return args


def geometry_of(args: argparse.Namespace) -> Geometry:
    """The encoder size: small random-init grid, ViT-Base with a checkpoint, flags override."""
    base = QUICK if args.quick else VIT_BASE if args.ckpt_path else SMALL
    overrides = {
        name: getattr(args, name)
        for name in ("embed_dim", "depth", "num_heads")
        if getattr(args, name) is not None
    }
    return Geometry(**{**asdict(base), **overrides})


def draw_split(scene: HyperspectralScene, protocol: str, seed: int, window: int) -> Split:
    """The split of a (protocol, seed), drawn once and shared by every method and baseline."""
    if protocol == "per_class":
        return make_split(scene.labels, "per_class", seed, train_size=0.1)
    # The leak buffer follows the classification window; tiles and baselines get the same pixels.
    return make_split(scene.labels, "spatially_disjoint", seed, patch_size=window)


def make_datamodule(
    formulation: str,
    scene: HyperspectralScene,
    split_file: Path,
    geometry: Geometry,
    batch_size: int,
) -> HyperspectralPatchDataModule | HyperspectralSceneDataModule:
    """The patch (classification) or tile (segmentation) datamodule on the loaded scene."""
    if formulation == "classification":
        return HyperspectralPatchDataModule(
            scene=scene,
            split_file=str(split_file),
            batch_size=batch_size,
            patch_size=geometry.window,
            img_size=geometry.img_size,
        )
    return HyperspectralSceneDataModule(
        scene=scene,
        split_file=str(split_file),
        batch_size=8,
        tile_size=geometry.tile_size,
        append_spectra=bool(geometry.full_spectrum),
        train_transform=[RandomFlipRotate()],
    )


def make_trainer(steps: int, device: torch.device) -> pl.Trainer:
    """A bare Lightning Trainer: a fixed number of optimizer steps, no validation, no files."""
    return pl.Trainer(
        max_steps=steps,
        max_epochs=-1,
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )


def schedules_of(args: argparse.Namespace) -> dict[str, str]:
    """The learning-rate schedule of each formulation's models (``--schedule``, ...)."""
    return {"classification": args.schedule, "segmentation": args.seg_schedule}


def schedule_args(schedule: str, steps: int) -> dict[str, Any]:
    """The task arguments of a learning-rate schedule over ``steps`` optimizer steps.

    ``cosine``: TerraTorch's ``CosineAnnealingLR`` stepped every optimizer step, reaching zero at
    the last one, as the shipped configs do over their epochs. With a constant rate the model
    after the last step is one point of a noisy trajectory: on a spatially disjoint split a
    segmentation run's test OA, read every 80 steps from step 640 on, moved between 57% and 68%,
    and another run of the same seed stopped at 37% after 1,000 steps (docs/segmentation.md).
    """
    if schedule == "constant":
        return {}
    return {
        "scheduler": "CosineAnnealingLR",
        "scheduler_hparams": {"T_max": steps, "interval": "step"},
    }


def schedule_words(args: argparse.Namespace) -> str:
    """The schedules of the report's training line, e.g. ``constant for classification, ...``."""
    words = {"constant": "constant", "cosine": "cosine to zero at the last step"}
    return ", ".join(
        f"{words[schedule]} for {formulation}"
        for formulation, schedule in schedules_of(args).items()
    )


def scores(targets: np.ndarray, predictions: np.ndarray, num_classes: int) -> dict[str, float]:
    """OA, AA and Cohen's kappa in % from class indices."""
    matrix = confusion_matrix(targets, predictions, num_classes)
    return {
        "oa": 100 * overall_accuracy(matrix),
        "aa": 100 * average_accuracy(matrix),
        "kappa": 100 * cohen_kappa(matrix),
    }


def deep_run(
    formulation: str,
    method: str,
    protocol: str,
    seed: int,
    scene: HyperspectralScene,
    split_file: Path,
    geometry: Geometry,
    args: argparse.Namespace,
    device: torch.device,
) -> tuple[Run, Any, Any]:
    """Train one model on one split and seed; test it. Returns (run, task, datamodule)."""
    datamodule = make_datamodule(formulation, scene, split_file, geometry, args.batch_size)
    pl.seed_everything(seed, verbose=False)
    steps = args.steps if formulation == "classification" else args.seg_steps
    schedule = schedules_of(args)[formulation]
    task = build_task(
        formulation,
        geometry,
        datamodule.num_bands,
        datamodule.num_classes,
        method,
        args.lr,
        args.ckpt_path,
        spectra=getattr(datamodule, "num_spectra", 0),
        **schedule_args(schedule, steps),
    )
    encoder_params, total_params = trainable_parameters(task)
    start = time.perf_counter()
    make_trainer(steps, device).fit(task, datamodule=datamodule)
    fit_seconds = time.perf_counter() - start
    predict = predict_patches if formulation == "classification" else predict_tiles
    limit = QUICK_TEST_BATCHES if args.quick else None
    predictions, targets = predict(task, datamodule, "test", device, limit)
    run = Run(
        formulation,
        method,
        protocol,
        seed,
        **scores(targets, predictions, datamodule.num_classes),
        trainable_encoder=encoder_params,
        trainable_total=total_params,
        train_pixels=len(datamodule.split.train),
        test_pixels=len(targets),
        fit_seconds=fit_seconds,
        torch_threads=torch.get_num_threads(),
        schedule=schedule,
    )
    report = getattr(task.model.encoder, "load_report", None)
    if report is not None:  # encoder tensors filled from --ckpt-path
        run.checkpoint_tensors = len(report.loaded)
    return run, task, datamodule


def classic_model(name: str, seed: int, quick: bool) -> Any:
    """RBF SVM or random forest on per-band standardised spectra (statistics of training pixels)."""
    if name == "SVM_RBF":
        return make_pipeline(StandardScaler(), SVC(C=100.0, gamma="scale"))
    forest = RandomForestClassifier(n_estimators=forest_trees(quick), random_state=seed, n_jobs=1)
    return make_pipeline(StandardScaler(), forest)


def forest_trees(quick: bool) -> int:
    """Trees of the random forest (few in ``--quick``, where only the plumbing is checked)."""
    return 10 if quick else 200


def classic_run(
    name: str, split: Split, scene: HyperspectralScene, args: argparse.Namespace
) -> tuple[Run, Any]:
    """Fit a classical baseline on the split's training spectra; test on its test pixels."""
    spectra = scene.image.reshape(-1, scene.num_bands)
    classes = scene.labels.reshape(-1) - 1
    test = split.test[: QUICK_TEST_BATCHES * args.batch_size] if args.quick else split.test
    model = classic_model(name, split.seed, args.quick)
    start = time.perf_counter()
    model.fit(spectra[split.train], classes[split.train])
    fit_seconds = time.perf_counter() - start
    run = Run(
        "spectral",
        name,
        split.protocol,
        split.seed,
        **scores(classes[test], model.predict(spectra[test]), scene.num_classes),
        trainable_encoder=0,
        trainable_total=0,
        train_pixels=len(split.train),
        test_pixels=len(test),
        fit_seconds=fit_seconds,
        torch_threads=torch.get_num_threads(),
    )
    return run, model


def summarise(runs: list[Run]) -> list[dict[str, Any]]:
    """One row per (formulation, method): per split, mean and std (over seeds) of each score."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for run in runs:
        row = rows.setdefault(
            (run.formulation, run.method),
            {
                "formulation": run.formulation,
                "method": run.method,
                "trainable_encoder": run.trainable_encoder,
                "trainable_total": run.trainable_total,
                "splits": {},
                "fit_seconds": [],
            },
        )
        row["fit_seconds"].append(run.fit_seconds)
        per_split = row["splits"].setdefault(run.split, {"oa": [], "aa": [], "kappa": []})
        for score in ("oa", "aa", "kappa"):
            per_split[score].append(getattr(run, score))
    order = {"classification": 0, "spectral": 1, "segmentation": 2}
    methods = [*method_choices(), *CLASSIC]
    rows = dict(sorted(rows.items(), key=lambda kv: (order[kv[0][0]], methods.index(kv[0][1]))))
    for row in rows.values():
        row["fit_seconds"] = float(np.mean(row["fit_seconds"]))
        for per_split in row["splits"].values():
            for score, values in per_split.items():
                std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
                per_split[score] = {"mean": float(np.mean(values)), "std": std, "n": len(values)}
    return list(rows.values())


def markdown_table(summary: list[dict[str, Any]], splits: list[str]) -> str:
    """The results as a Markdown table: OA / AA / kappa in %, mean +- std over seeds."""
    titles = {"per_class": "per-class 10%", "spatially_disjoint": "spatially disjoint"}
    header = ["Formulation", "Method", "Trainable params"]
    for split in splits:
        header += [f"{titles[split]} OA", "AA", "κ"]
    header.append("Fit s/run")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in summary:
        params = f"{row['trainable_total']:,}" if row["trainable_total"] else "-"
        cells = [row["formulation"], row["method"], params]
        for split in splits:
            scores_ = row["splits"].get(split)
            for score in ("oa", "aa", "kappa"):
                if scores_ is None:
                    cells.append("-")
                else:
                    cells.append(f"{scores_[score]['mean']:.1f} ± {scores_[score]['std']:.1f}")
        cells.append(f"{row['fit_seconds']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_accuracy_vs_parameters(
    summary: list[dict[str, Any]], splits: list[str], path: Path
) -> None:
    """OA (mean +- std) against trainable parameters (log x), one panel per split."""
    fig = Figure(figsize=(5.5 * len(splits), 4.2), layout="constrained")
    axes = fig.subplots(1, len(splits), squeeze=False)[0]
    markers = {"classification": "o", "segmentation": "s"}
    for ax, split in zip(axes, splits, strict=True):
        for row in summary:
            scores_ = row["splits"].get(split)
            if scores_ is None:
                continue
            oa = scores_["oa"]
            if row["formulation"] == "spectral":
                ax.axhline(oa["mean"], color="grey", linestyle="--", linewidth=1)
                ax.annotate(
                    row["method"],
                    (0.01, oa["mean"]),
                    xycoords=("axes fraction", "data"),
                    fontsize=7,
                    color="grey",
                    va="bottom",
                )
                continue
            ax.errorbar(
                row["trainable_total"],
                oa["mean"],
                yerr=oa["std"],
                capsize=3,
                marker=markers[row["formulation"]],
                linestyle="none",
            )
            label = row["method"] + (" (seg)" if row["formulation"] == "segmentation" else "")
            ax.annotate(
                label,
                (row["trainable_total"], oa["mean"]),
                fontsize=7,
                textcoords="offset points",
                xytext=(4, 4),
            )
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters (log)")
        ax.set_ylabel("OA (%)")
        ax.set_title(split.replace("_", " ") + " split")
        ax.grid(True, which="both", alpha=0.3)
    _save(fig, path)


def plot_class_maps(maps: dict[str, np.ndarray], class_names: list[str], path: Path) -> None:
    """The ground truth and each predicted map side by side (class indices; -1 = unlabelled)."""
    colours = class_colours(len(class_names))
    fig = Figure(figsize=(3.0 * len(maps) + 2.2, 3.4), layout="constrained")
    axes = fig.subplots(1, len(maps), squeeze=False)[0]
    for ax, (title, class_map) in zip(axes, maps.items(), strict=True):
        rgb = np.ones((*class_map.shape, 3))
        rgb[class_map >= 0] = colours[class_map[class_map >= 0]]
        ax.imshow(rgb, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.set_axis_off()
    handles = [Patch(color=colours[k], label=name) for k, name in enumerate(class_names)]
    fig.legend(handles=handles, loc="outside right center", fontsize=6)
    _save(fig, path)


def _save(fig: Figure, path: Path) -> None:
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=120)


#: How to read the table; the same for every run.
READING = (
    "AA averages the classes present in each test set: a spatially disjoint split can leave a "
    "small class out of one side (the split warns which). `Fit s/run` is the wall time of "
    "`trainer.fit` on the machine named above; on a shared CPU it follows the load of the "
    "machine more than the method (see the Efficiency section for controlled step timings)."
)


def results_section(
    args: argparse.Namespace,
    geometry: Geometry,
    runs: list[Run],
    table: str,
    command: str,
    wall_seconds: float | None,
) -> str:
    """The Markdown of the Accuracy section: setup, table, plots, how to read them."""
    weights = (
        f"the checkpoint `{Path(args.ckpt_path).name}`"
        if args.ckpt_path
        else "random initialisation (no pretrained weights on this machine)"
    )
    sizes = []
    for split in args.splits:
        deep = [r for r in runs if r.split == split and r.formulation == "classification"]
        train = np.mean([r.train_pixels for r in deep])
        test = np.mean([r.test_pixels for r in deep])
        epochs = args.steps * args.batch_size / train
        sizes.append(
            f"{split}: {train:.0f} training / {test:.0f} test pixels on average "
            f"({epochs:.1f} classification epochs)"
        )
    img = os.path.relpath(args.img_dir, args.results_md.parent) if args.img_dir else None
    honest = (
        "Adapters on a frozen *random* encoder measure little: only the adapters and the head "
        "learn, on top of random features. These rows are the reference; the section "
        "[Accuracy on a pre-trained encoder](#accuracy-on-a-pre-trained-encoder) measures the "
        "same methods where they are meant to work, on encoders pre-trained with the plugin's "
        "masked autoencoder (`benchmarks/pretrain_then_tune.py`). The from-scratch full "
        "fine-tuning row is the honest reference for what this encoder size learns from labels "
        "alone; rerun with `--ckpt-path` and the official SpectralGPT weights to compare the "
        "methods as the source paper does."
        if not args.ckpt_path
        else "Encoder initialised from the official SpectralGPT weights."
    )
    lines = [
        "Produced by `benchmarks/accuracy.py` "
        + (
            f"in {wall_seconds / 60:.1f} min."
            if wall_seconds is not None
            else f"from the runs of `{args.runs.name}` (resumed runs; fit time in all "
            f"{sum(r.fit_seconds for r in runs) / 60:.1f} min)."
        ),
        "",
        f"- Command: `{command}`",
        f"- Machine: {machine_description(run_threads=[r.torch_threads for r in runs])}",
        "- Scene: Indian Pines (145 x 145, 200 bands, 16 classes), PCA to 12 components "
        "fitted on training pixels only.",
        f"- Splits: {'; '.join(sizes)}. Seeds {args.seeds} (each seed draws its own split "
        "and initialisation). `spatially_disjoint`: 16 x 16 blocks, half the labelled pixels "
        f"held out, a {geometry.window // 2}-pixel buffer so no training patch window touches a "
        "test block; training tiles hide validation and test blocks (`hide_held_out`).",
        f"- Encoder: {geometry.describe()}; {weights}.",
        f"- Training (CPU budget): AdamW, lr {args.lr:g} ({schedule_words(args)}), the same "
        "number of optimizer steps "
        f"for every model of a formulation: {args.steps} steps of {args.batch_size} patches "
        f"(classification), {args.seg_steps} steps of 8 tiles (segmentation: UNet plus a "
        f"{geometry.spectral_path}-channel per-pixel spectral path"
        + (" on the whole z-scored spectrum" if geometry.full_spectrum else "")
        + ", `RandomFlipRotate` on "
        "training tiles, see [Segmentation](segmentation.md)); no validation set and no early "
        "stopping: the model after the last step is tested.",
        "- PEFT: adapters on `attn.q` and `attn.v` of every block (LoRA/LoRA+/LoKr r=4, "
        "KronA/KronA+ with automatic factor shapes, lr_ratio 16 for the + methods); encoder "
        "base weights frozen, necks, decoder and head trained.",
        "- Baselines: RBF SVM (C=100, gamma='scale') and a random forest "
        f"({forest_trees(args.quick)} trees) on the "
        "standardised 200-band spectra of the same training pixels.",
        "",
        "OA / AA / κ in %, mean ± std over seeds:",
        "",
        table,
        "",
        honest,
        "",
        READING,
    ]
    if img is not None:
        lines += [
            "",
            f"![OA against trainable parameters]({img}/accuracy_vs_params.png)",
            "",
            f"Class maps, {args.splits[0]} split, seed {args.seeds[0]} (whole scene predicted; "
            "white in the ground truth = unlabelled):",
            "",
            f"![Class maps next to the ground truth]({img}/class_maps.png)",
        ]
    return "\n".join(lines)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_grid(
    args: argparse.Namespace,
    scene: HyperspectralScene,
    geometry: Geometry,
    device: torch.device,
    split_dir: Path,
) -> tuple[list[Run], dict[str, np.ndarray]]:
    """Every run of the grid. Returns (runs, class maps of the first split and seed).

    Class maps (of the first segmentation method, both formulations) are only predicted when
    plots are asked for (``--img-dir``).
    """
    started = time.perf_counter()
    want_maps = args.img_dir is not None
    map_key = (args.splits[0], args.seeds[0])
    map_method = args.seg_methods[0]
    runs = load_runs(args.runs, schedules_of(args))
    done = {(r.formulation, r.method, r.split, r.seed) for r in runs}
    maps: dict[str, np.ndarray] = {"ground truth": scene.labels - 1}
    spectra = scene.image.reshape(-1, scene.num_bands)
    split_files: dict[tuple[str, int], Path] = {}

    def record(run: Run) -> None:
        runs.append(run)
        if args.runs is not None:
            args.runs.parent.mkdir(parents=True, exist_ok=True)
            with args.runs.open("a") as f:  # one line per run: resumable
                f.write(json.dumps(asdict(run)) + "\n")
        log(
            f"{run.formulation:14s} {run.method:13s} {run.split:18s} seed {run.seed}: "
            f"OA {run.oa:5.1f} AA {run.aa:5.1f} kappa {run.kappa:5.1f} "
            f"(fit {run.fit_seconds:.1f} s, {time.perf_counter() - started:.0f} s elapsed)"
        )

    def train(formulation: str, method: str, protocol: str, seed: int) -> tuple[Any, Any]:
        if (formulation, method, protocol, seed) in done:  # no model: no class map
            return None, None
        split_file = split_files[protocol, seed]
        run, task, datamodule = deep_run(
            formulation, method, protocol, seed, scene, split_file, geometry, args, device
        )
        record(run)
        return task, datamodule

    for protocol in args.splits:
        for seed in args.seeds:
            split = draw_split(scene, protocol, seed, geometry.window)
            split_files[protocol, seed] = split_dir / f"{protocol}_{seed}.npz"
            split.save(split_files[protocol, seed])
            for method in args.methods:
                task, datamodule = train("classification", method, protocol, seed)
                wanted = (protocol, seed, method) == (*map_key, map_method)
                if want_maps and wanted and task is not None:
                    predictions, _ = predict_patches(task, datamodule, "predict", device)
                    maps[f"{method} classification"] = predictions.reshape(scene.shape)
            for name in CLASSIC:
                if ("spectral", name, protocol, seed) in done:
                    continue
                run, model = classic_run(name, split, scene, args)
                record(run)
                if want_maps and (protocol, seed) == map_key:
                    maps[name] = model.predict(spectra).reshape(scene.shape)
            for method in args.seg_methods:
                task, datamodule = train("segmentation", method, protocol, seed)
                wanted = (protocol, seed, method) == (*map_key, map_method)
                if want_maps and wanted and task is not None:
                    maps[f"{method} segmentation"], _ = predict_tiles(
                        task, datamodule, "predict", device
                    )
    return runs, maps


def load_runs(path: Path | None, schedules: dict[str, str] | None = None) -> list[Run]:
    """The runs of a ``--runs`` JSON-lines file (none when it does not exist yet).

    Processes running parts of the grid (``--splits``, ``--seeds``) may append to the same file;
    a run recorded twice counts once (the first).

    Raises:
        ValueError: with ``schedules`` (formulation -> schedule), a trained model of the file
            that ran another schedule than its formulation's (runs recorded before the options
            ran a constant rate), which a resumed grid would otherwise mix into its table.
    """
    if path is None or not path.is_file():
        return []
    runs: dict[tuple[str, str, str, int], Run] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            run = Run(**json.loads(line))
            runs.setdefault((run.formulation, run.method, run.split, run.seed), run)
    for run in runs.values():
        wanted = (schedules or {}).get(run.formulation)  # None: spectral, or not checked
        ran = run.schedule or "constant"
        if wanted is not None and ran != wanted:
            flag = "--schedule" if run.formulation == "classification" else "--seg-schedule"
            raise ValueError(
                f"{path} holds {run.formulation} runs trained with the {ran} learning-rate "
                f"schedule (e.g. {run.method} {run.split} seed {run.seed}), but this grid uses "
                f"{flag} {wanted}; pass {flag} {ran} or another --runs file."
            )
    return list(runs.values())


def main(argv: list[str] | None = None) -> int:
    """Run the grid, print the table, write the optional JSON, plots and Markdown section."""
    args = parse_args(argv)
    quiet_libraries()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    geometry = geometry_of(args)
    scene = IndianPines(args.data_root / "indian_pines")
    started = time.perf_counter()
    if args.report_only:
        runs, maps = load_runs(args.runs, schedules_of(args)), {}
    else:
        with tempfile.TemporaryDirectory(prefix="accuracy_splits_") as split_dir:
            runs, maps = run_grid(args, scene, geometry, device, Path(split_dir))
    wall_seconds = None if args.report_only else time.perf_counter() - started
    want_maps = args.img_dir is not None

    summary = summarise(runs)
    table = markdown_table(summary, args.splits)
    print(table, flush=True)
    command = "python -m benchmarks.accuracy " + " ".join(sys.argv[1:] if argv is None else argv)
    if want_maps:
        plot_accuracy_vs_parameters(summary, args.splits, args.img_dir / "accuracy_vs_params.png")
        if len(maps) > 1:  # not only the ground truth: models were trained in this run
            plot_class_maps(maps, scene.class_names, args.img_dir / "class_maps.png")
    if args.json is not None:
        payload = {
            "command": command,
            "machine": machine_description(),
            "wall_seconds": wall_seconds,
            "geometry": asdict(geometry),
            "ckpt_path": args.ckpt_path,
            "seg_methods": args.seg_methods,
            "summary": summary,
            "runs": [asdict(run) for run in runs],
        }
        with atomic_write(args.json, "w") as f:
            json.dump(payload, f, indent=1)
    if args.results_md is not None:
        body = results_section(args, geometry, runs, table, command, wall_seconds)
        update_markdown_section(args.results_md, "accuracy", "## Accuracy", body)
    if wall_seconds is not None:
        log(f"done in {wall_seconds / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
