"""Recipe study: which training change helps the quickstart model, one change at a time.

Every configuration starts from the shipped quickstart recipe (``configs/base/trainer.yaml`` +
``configs/data/indian_pines_patch.yaml`` + ``configs/quickstart.yaml``: the patch datamodule,
``ClassificationTask``, a randomly initialised SpectralGPT of width 64 and depth 4) read from the
YAML files themselves, without its ``train_transform`` and its spectral path (with the path's
own loss and learning rate; the baseline is the recipe before the study), and changes one thing:

- ``flips``: ``train_transform`` = ``RandomFlipRotate`` (the eight symmetries of the square);
- ``flips_jitter``: the same plus ``SpectralJitter`` (per-band gains, 5%);
- ``label_smoothing``: TerraTorch's custom loss ``torch.nn.CrossEntropyLoss(label_smoothing=0.1)``;
- ``warmup_cosine``: linear warm-up over the first 10% of the steps, then the cosine;
- ``onecycle``: ``OneCycleLR`` (max lr = the recipe's lr);
- ``route_all_pixels``: the PCA fitted on every pixel of the scene, test pixels included
  (transductive: the shipped datamodules fit it on training pixels only);
- ``window_15``: 15x15 windows instead of 9x9 (both resized to 16x16);
- ``spectral_path``: the quickstart's spectral path: the centre pixel's whole spectrum (200
  z-scored bands, appended by the datamodule: ``append_spectra``) through a 64-wide path added
  before the head (``PEFTEncoderDecoderFactory`` with ``spectral_path: {width: 64, bands:
  200}``);
- ``path_loss`` (with ``--combined``, after ``spectral_path``): the path's own logits (the
  head applied to the path alone) are an auxiliary output, weighted by the quickstart's
  ``aux_loss`` (``spectral_path: 1.0``; ``spectral_path.loss: true``);
- ``path_lr`` (likewise): the path learns at the quickstart's ``lr_overrides`` rate
  (``spectral_path: 1.0e-2``);
- ``combined``: the changes named by ``--combined`` together.

Each configuration trains for ``--steps`` optimizer steps (the baseline's cosine is rescaled from
epochs to those steps) on both split protocols and every seed, through the library pieces of
``benchmarks/accuracy.py`` (datamodule + stock task + a bare Lightning Trainer), and is tested
on the split's test pixels. Every spatially disjoint split is drawn with the buffer of the
largest window (7 pixels), so that all configurations see the same pixels and no training
window touches a test pixel. An RBF SVM on the same splits is the reference.

Runs are appended to a JSON-lines file as they finish (``--runs``); a rerun skips the runs
already there, so the study can be resumed and the report rebuilt (``--report-only``).

    nice -n 19 python -m benchmarks.recipe_study --runs outputs/recipe_study.jsonl \\
        --results-md docs/results.md
    python -m benchmarks.recipe_study --quick          # CI smoke run
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import yaml
from terratorch.tasks import ClassificationTask

from benchmarks.accuracy import classic_model, make_trainer, schedule_args, scores
from benchmarks.docgen.sections import update_markdown_section
from benchmarks.hsi_models import (
    check_data_root,
    machine_description,
    predict_patches,
    quiet_libraries,
)
from terratorch_hsi_peft.datamodules import HyperspectralPatchDataModule
from terratorch_hsi_peft.datasets import HyperspectralScene, IndianPines, Split, make_split
from terratorch_hsi_peft.transforms import BandRoute

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
#: The quickstart's config files, composed in this order (as the quickstart does).
RECIPE_FILES = ("base/trainer.yaml", "data/indian_pines_patch.yaml", "quickstart.yaml")
SPLITS = ("per_class", "spatially_disjoint")
FACTORS = (
    "baseline",
    "flips",
    "flips_jitter",
    "label_smoothing",
    "warmup_cosine",
    "onecycle",
    "route_all_pixels",
    "window_15",
    "spectral_path",
    "combined",
)
#: Changes that refine the spectral path: only in ``--combined``, after ``spectral_path``.
PATH_REFINEMENTS = ("path_loss", "path_lr")
#: The quickstart's spectral path (model_args) and its input (data), kept for the factor.
PATH_MODEL_ARGS = ("spectral_path",)
#: The quickstart's task arguments of its refinements (its loss's weight, its learning rate).
PATH_TASK_ARGS = ("aux_loss", "lr_overrides")
#: Largest window of the study: the spatially disjoint splits' leak buffer follows it.
MAX_WINDOW = 15
FLIPS = {"class_path": "terratorch_hsi_peft.transforms.RandomFlipRotate", "init_args": {"p": 0.5}}
JITTER = {"class_path": "terratorch_hsi_peft.transforms.SpectralJitter", "init_args": {}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS))
    parser.add_argument("--factors", nargs="+", choices=FACTORS, default=list(FACTORS[:-1]))
    parser.add_argument(
        "--combined",
        nargs="+",
        choices=[*FACTORS[1:-1], *PATH_REFINEMENTS],
        default=["flips", "label_smoothing", "warmup_cosine"],
        help="the changes the 'combined' configuration makes together",
    )
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per run")
    parser.add_argument("--runs", type=Path, help="JSON-lines file of finished runs (resumable)")
    parser.add_argument("--results-md", type=Path, help="Markdown file whose section to write")
    parser.add_argument("--report-only", action="store_true", help="only rebuild the report")
    parser.add_argument(
        "--section",
        default="recipe",
        help="name of the --results-md section (another name keeps the main one)",
    )
    parser.add_argument("--heading", default="## Training recipe study", help="its heading")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 steps, test subsets")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be >= 1.")
    check_data_root(parser, args.data_root)
    if args.report_only and args.runs is None:
        parser.error("--report-only needs --runs (the file of finished runs).")
    if args.quick:
        args.seeds, args.steps = args.seeds[:1], 2
    return args


def load_recipe() -> dict[str, Any]:
    """The quickstart's composed config (later files override earlier ones key by key)."""
    recipe: dict[str, Any] = {}
    for name in RECIPE_FILES:
        _merge(recipe, yaml.safe_load((CONFIGS / name).read_text()))
    return recipe


def _merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict) and key != "model_args":
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


def configure(
    factor: str, recipe: dict[str, Any], steps: int, combined: list[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(datamodule init_args, task init_args) of one configuration, ``steps`` steps long."""
    data = copy.deepcopy(recipe["data"]["init_args"])
    # The baseline is the recipe as it was before this study: no augmentation (the shipped
    # configs flip since, as the study concluded).
    data.pop("train_transform", None)
    task = copy.deepcopy(recipe["model"]["init_args"])
    # Nor the spectral path the quickstart adopted from the study (the spectral_path factor).
    path = {k: task["model_args"].pop(k) for k in PATH_MODEL_ARGS if k in task["model_args"]}
    # Nor the path's own loss and learning rate (kept for the path_loss and path_lr refinements).
    if "spectral_path" in path:
        path["spectral_path"] = {k: v for k, v in path["spectral_path"].items() if k != "loss"}
    path.update({k: task.pop(k) for k in PATH_TASK_ARGS if k in task})
    path["append_spectra"] = data.pop("append_spectra", False)
    path["model_factory"], task["model_factory"] = task["model_factory"], "EncoderDecoderFactory"
    # The recipe's cosine spans its epochs; here it spans the run's steps.
    task.update(schedule_args("cosine", steps))
    for change in combined if factor == "combined" else [factor]:
        _apply(change, data, task, steps, path)
    return data, task


def _apply(
    change: str, data: dict[str, Any], task: dict[str, Any], steps: int, path: dict[str, Any]
) -> None:
    if change == "flips":
        data["train_transform"] = [*data.get("train_transform", []), FLIPS]
    elif change == "flips_jitter":
        data["train_transform"] = [*data.get("train_transform", []), FLIPS, JITTER]
    elif change == "label_smoothing":
        task.update(
            loss="torch.nn.CrossEntropyLoss",
            custom_loss=True,
            custom_loss_kwargs={"label_smoothing": 0.1},
        )
    elif change == "warmup_cosine":
        warm = max(steps // 10, 1)
        task["scheduler"] = "SequentialLR"
        task["scheduler_hparams"] = {
            "schedulers": {
                "LinearLR": {"start_factor": 0.01, "total_iters": warm},
                "CosineAnnealingLR": {"T_max": max(steps - warm, 1)},
            },
            "milestones": [warm],
            "interval": "step",
        }
    elif change == "onecycle":
        task["scheduler"] = "OneCycleLR"
        task["scheduler_hparams"] = {"max_lr": task["lr"], "total_steps": steps, "interval": "step"}
    elif change == "route_all_pixels":
        data["_route_all_pixels"] = True
    elif change == "window_15":
        data["patch_size"] = 15
    elif change == "spectral_path":
        data["append_spectra"] = path["append_spectra"]
        task["model_factory"] = path["model_factory"]
        task["model_args"] = {**task["model_args"], **{k: path[k] for k in PATH_MODEL_ARGS}}
    elif change in ("path_loss", "path_lr"):
        if "spectral_path" not in task["model_args"]:
            raise ValueError(
                f"{change} refines the spectral path: combine it after spectral_path "
                f"(--combined ... spectral_path {change})."
            )
        if change == "path_loss":
            own_loss = {**task["model_args"]["spectral_path"], "loss": True}
            task["model_args"] = {**task["model_args"], "spectral_path": own_loss}
            task["aux_loss"] = path["aux_loss"]
        else:
            task["lr_overrides"] = path["lr_overrides"]
    elif change != "baseline":
        raise ValueError(
            f"Unknown factor {change!r}; choose among {FACTORS} (and {PATH_REFINEMENTS})."
        )


class AllPixelsPatchDataModule(HyperspectralPatchDataModule):
    """The patch datamodule with its band route fitted on every pixel (transductive)."""

    @property
    def route(self) -> BandRoute:
        if self._route is None:
            self._route = BandRoute.fit(
                self.band_route,
                self.scene.image.reshape(-1, self.scene.num_bands),
                num_components=self.num_components,
                whiten=self.pca_whiten,
            )
        return self._route


def draw_split(scene: HyperspectralScene, protocol: str, seed: int) -> Split:
    """The split of a (protocol, seed), shared by every configuration and the SVM."""
    if protocol == "per_class":
        return make_split(scene.labels, "per_class", seed, train_size=0.1)
    return make_split(scene.labels, "spatially_disjoint", seed, patch_size=MAX_WINDOW)


def deep_run(
    factor: str,
    protocol: str,
    seed: int,
    scene: HyperspectralScene,
    split_file: Path,
    args: argparse.Namespace,
    recipe: dict[str, Any],
) -> dict[str, Any]:
    """Train one configuration on one split and seed; test it on the split's test pixels."""
    data_args, task_args = configure(factor, recipe, args.steps, args.combined)
    for key in ("scene", "root", "split"):
        data_args.pop(key, None)
    cls = AllPixelsPatchDataModule if data_args.pop("_route_all_pixels", False) else None
    datamodule = (cls or HyperspectralPatchDataModule)(
        scene=scene, split_file=str(split_file), **data_args
    )
    pl.seed_everything(seed, verbose=False)
    task = ClassificationTask(**task_args)
    device = torch.device("cpu")
    start = time.perf_counter()
    make_trainer(args.steps, device).fit(task, datamodule=datamodule)
    fit_seconds = time.perf_counter() - start
    datamodule.batch_size = 256  # inference holds no gradients
    predictions, targets = predict_patches(
        task, datamodule, "test", device, 2 if args.quick else None
    )
    return {
        "factor": factor,
        "split": protocol,
        "seed": seed,
        **scores(targets, predictions, datamodule.num_classes),
        "train_pixels": len(datamodule.split.train),
        "test_pixels": len(targets),
        "fit_seconds": fit_seconds,
        "torch_threads": torch.get_num_threads(),
    }


def svm_run(protocol: str, split: Split, scene: HyperspectralScene, quick: bool) -> dict[str, Any]:
    """The RBF SVM of ``benchmarks/accuracy.py`` on the same split."""
    spectra = scene.image.reshape(-1, scene.num_bands)
    classes = scene.labels.reshape(-1) - 1
    test = split.test[:512] if quick else split.test
    model = classic_model("SVM_RBF", split.seed, quick)
    start = time.perf_counter()
    model.fit(spectra[split.train], classes[split.train])
    return {
        "factor": "svm_rbf",
        "split": protocol,
        "seed": int(split.seed),
        **scores(classes[test], model.predict(spectra[test]), scene.num_classes),
        "train_pixels": len(split.train),
        "test_pixels": len(test),
        "fit_seconds": time.perf_counter() - start,
        "torch_threads": torch.get_num_threads(),
    }


def summarise(runs: list[dict[str, Any]], splits: list[str]) -> list[dict[str, Any]]:
    """Per configuration and split: mean/std of OA, AA, kappa and the paired OA gain."""
    baseline = baseline_oa(runs)
    rows = []
    for factor in [*FACTORS, "svm_rbf"]:
        row: dict[str, Any] = {"factor": factor, "splits": {}}
        for split in splits:
            mine = [r for r in runs if r["factor"] == factor and r["split"] == split]
            if mine:
                row["splits"][split] = split_stats(mine, split, baseline)
        if row["splits"]:
            rows.append(row)
    return rows


def baseline_oa(runs: list[dict[str, Any]]) -> dict[tuple[str, int], float]:
    """The baseline's OA per (split, seed): what each run's gain is paired with."""
    return {(r["split"], r["seed"]): r["oa"] for r in runs if r["factor"] == "baseline"}


def split_stats(
    mine: list[dict[str, Any]], split: str, baseline: dict[tuple[str, int], float]
) -> dict[str, Any]:
    """One configuration's runs on one split: mean/std of OA, AA, kappa, the paired OA gain over
    the baseline (None without a baseline run of the same seed), the seed count, mean fit time."""
    stats: dict[str, Any] = {
        score: (float(np.mean([r[score] for r in mine])), _std([r[score] for r in mine]))
        for score in ("oa", "aa", "kappa")
    }
    gains = [r["oa"] - baseline[split, r["seed"]] for r in mine if (split, r["seed"]) in baseline]
    stats["gain"] = (float(np.mean(gains)), _std(gains)) if gains else None
    stats["n"] = len(mine)
    stats["fit_seconds"] = float(np.mean([r["fit_seconds"] for r in mine]))
    return stats


def _std(values: list[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def markdown_table(rows: list[dict[str, Any]], splits: list[str], fit_seconds: bool = False) -> str:
    """OA / AA / kappa (mean ± std over seeds) and the OA gain over the baseline, per split; with
    ``fit_seconds``, the mean fit time too."""
    titles = {"per_class": "per-class 10%", "spatially_disjoint": "spatially disjoint"}
    columns = ["ΔOA vs baseline", "AA", "κ", "seeds"] + (["fit s"] if fit_seconds else [])
    header = ["Configuration"]
    for split in splits:
        header += [f"{titles[split]} OA", *columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [f"`{row['factor']}`"]
        for split in splits:
            stats = row["splits"].get(split)
            if stats is None:
                cells += ["-"] * (1 + len(columns))
                continue
            gain = stats["gain"]
            cells += [
                f"{stats['oa'][0]:.1f} ± {stats['oa'][1]:.1f}",
                "-"
                if gain is None or row["factor"] == "baseline"
                else f"{gain[0]:+.1f} ± {gain[1]:.1f}",
                f"{stats['aa'][0]:.1f} ± {stats['aa'][1]:.1f}",
                f"{stats['kappa'][0]:.1f} ± {stats['kappa'][1]:.1f}",
                str(stats["n"]),
            ] + ([f"{stats['fit_seconds']:.0f}"] if fit_seconds else [])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def load_runs(path: Path | None) -> list[dict[str, Any]]:
    if path is None or not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the missing runs, print the table, write the optional Markdown section."""
    args = parse_args(argv)
    quiet_libraries()
    recipe = load_recipe()
    runs = load_runs(args.runs)
    done = {(r["factor"], r["split"], r["seed"]) for r in runs}
    started = time.perf_counter()
    if not args.report_only:
        scene = IndianPines(args.data_root / "indian_pines")
        with tempfile.TemporaryDirectory(prefix="recipe_splits_") as split_dir:
            # Seed-major: a study cut short still has every configuration on the first seeds.
            for seed in args.seeds:
                for factor in ["svm_rbf", *args.factors]:
                    for protocol in args.splits:
                        if (factor, protocol, seed) in done:
                            continue
                        split = draw_split(scene, protocol, seed)
                        split_file = Path(split_dir) / f"{protocol}_{seed}.npz"
                        split.save(split_file)
                        if factor == "svm_rbf":
                            run = svm_run(protocol, split, scene, args.quick)
                        else:
                            run = deep_run(factor, protocol, seed, scene, split_file, args, recipe)
                        runs.append(run)
                        if args.runs is not None:
                            args.runs.parent.mkdir(parents=True, exist_ok=True)
                            with args.runs.open("a") as f:  # one line per run: resumable
                                f.write(json.dumps(run) + "\n")
                        log(
                            f"{factor:17s} {protocol:18s} seed {seed}: OA {run['oa']:5.1f} "
                            f"AA {run['aa']:5.1f} (fit {run['fit_seconds']:.0f} s, "
                            f"{time.perf_counter() - started:.0f} s elapsed)"
                        )
    table = markdown_table(summarise(runs, args.splits), args.splits)
    print(table, flush=True)
    if args.results_md is not None:
        update_markdown_section(
            args.results_md, args.section, args.heading, report(args, runs, table)
        )
    return 0


def report(args: argparse.Namespace, runs: list[dict[str, Any]], table: str) -> str:
    """The generated part of the study's section: setup and table."""
    sizes = []
    for split in args.splits:
        mine = [r for r in runs if r["split"] == split and r["factor"] == "baseline"]
        if mine:
            train = np.mean([r["train_pixels"] for r in mine])
            test = np.mean([r["test_pixels"] for r in mine])
            sizes.append(f"{split}: {train:.0f} training / {test:.0f} test pixels on average")
    combined = (
        " `combined` = " + " + ".join(f"`{c}`" for c in args.combined) + "."
        if "combined" in args.factors
        else ""
    )
    return "\n".join(
        [
            "Produced by `benchmarks/recipe_study.py` "
            f"(`--steps {args.steps}`, seeds {args.seeds}).",
            "",
            f"- Machine: {machine_description(run_threads=[r.get('torch_threads') for r in runs])}",
            "- Model and recipe: the quickstart's (configs/quickstart.yaml: SpectralGPT width 64, "
            "depth 4, 2 heads, 4x4x3 tubelets, random init, 9x9 windows resized to 16x16, "
            "batch 32, AdamW lr 1e-3, weight decay 0.05, cosine schedule, no augmentation, no "
            "spectral path), read from the YAML files"
            f", trained for {args.steps} steps; each row changes one thing "
            f"(see the script's docstring).{combined}",
            f"- Splits: {'; '.join(sizes)}. Spatially disjoint splits use a "
            f"{MAX_WINDOW // 2}-pixel buffer (the largest window's radius) for every row.",
            "- ΔOA: OA minus the baseline's OA on the same split and seed, mean ± std over seeds.",
            "",
            table,
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
