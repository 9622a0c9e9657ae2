"""The README's first command: a small SpectralGPT fine-tuned on Indian Pines, next to an SVM.

A script of the repository, not of the package: it composes the repository's ``configs/``.
``make quickstart`` runs it from the repository root::

    python quickstart.py --data-root ../shared/data

It drives TerraTorch's own CLI (``build_lightning_cli``, which is what the ``terratorch`` command
runs) on ``configs/quickstart.yaml`` three times, each from scratch as a user would:

1. ``fit``: full fine-tuning of a small, randomly initialised SpectralGPT (no released weights
   are needed) on Indian Pines with the literature's split (10% of each class, seed 0);
2. ``test`` on the checkpoint: OA, AA and kappa on the remaining 90% of the labelled pixels;
3. ``predict`` on the checkpoint: the class map of the whole scene (GeoTIFF + PNG).

Then an SVM (RBF kernel, standardised spectra, ``C`` chosen by 3-fold cross-validation on the
training pixels only) is fitted on the same split and scored on the same test pixels, per pixel
and with its class log-probabilities averaged over k x k neighbours (the spatial context the
network gets from its patches), k chosen on the validation pixels. Everything goes to
``outputs/quickstart/`` (replaced on every run); the figures also to ``results.json``.

The split is the literature's per-class one, which is spatially leaky (test pixels sit next to
training pixels), so these figures overstate accuracy on unseen areas; docs/results.md holds the
spatially disjoint comparison.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from terratorch_hsi_peft.callbacks import ClassMapWriter
from terratorch_hsi_peft.metrics import (
    average_accuracy,
    cohen_kappa,
    confusion_matrix,
    overall_accuracy,
)
from terratorch_hsi_peft.utils.download import atomic_write

__all__ = ["main", "svm_baseline"]

#: The repository's configs/ folder, beside this script.
CONFIGS = Path(__file__).resolve().parent / "configs"
#: What the quickstart composes, in order (a later file overrides an earlier one per key).
CONFIG_FILES = ("base/trainer.yaml", "data/indian_pines_patch.yaml", "quickstart.yaml")
#: Output folder, relative to the working directory; the configs write there too.
OUTPUT_DIR = Path("outputs/quickstart")
SCENE_FILES = ("Indian_pines_corrected.mat", "Indian_pines_gt.mat")
#: C values tried by the SVM's cross-validation (gamma: scikit-learn's "scale").
SVM_C_GRID = (1.0, 10.0, 100.0, 1000.0)
#: Neighbourhood sizes tried for the smoothed SVM (1: none), chosen on the validation pixels.
SMOOTHING_WINDOWS = (1, 3, 5, 7, 9, 11, 13)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the quickstart; return (and print) the figures of both models."""
    args = _parse(argv)
    torch.set_num_threads(args.threads)
    root = scene_folder(args.data_root)
    configs = [CONFIGS / name for name in CONFIG_FILES]
    shutil.rmtree(OUTPUT_DIR, ignore_errors=True)
    start = time.perf_counter()
    common = [arg for path in configs for arg in ("--config", str(path))]
    common += ["--data.init_args.root", str(root)]
    if args.max_epochs is not None:
        common += ["--trainer.max_epochs", str(args.max_epochs)]

    _cli("fit", common)
    checkpoint = OUTPUT_DIR / "checkpoints" / "last.ckpt"
    # Inference holds no gradients: larger batches, fewer steps over the 21,025 pixels.
    inference = [*common, "--ckpt_path", str(checkpoint), "--data.init_args.batch_size", "256"]
    tested = _cli("test", inference)
    predicted = _cli("predict", inference)

    metrics = tested.trainer.callback_metrics
    model = {key: float(metrics[f"test/{key}"]) for key in ("OA", "AA", "Kappa")}
    datamodule = predicted.datamodule  # split and band route restored from the checkpoint
    split = datamodule.split
    spectra = datamodule.scene.image.reshape(-1, datamodule.scene.num_bands)
    classes = datamodule.scene.labels.reshape(-1) - 1
    num_classes = datamodule.num_classes
    svm_logp, svm_c = svm_baseline(spectra, classes, split.train, num_classes)
    svm_logp = svm_logp.reshape(*datamodule.scene.labels.shape, num_classes)
    svm = _figures(classes[split.test], svm_logp.argmax(-1).ravel()[split.test], num_classes)
    window = choose_window(svm_logp, classes, split.val)
    smoothed = smooth(svm_logp, window).argmax(-1).ravel()
    svm_smoothed = _figures(classes[split.test], smoothed[split.test], num_classes)
    writer = next(cb for cb in predicted.trainer.callbacks if isinstance(cb, ClassMapWriter))
    results = {
        "scene": datamodule.scene.name,
        "split": {"protocol": split.protocol, "seed": int(split.seed), **split.params},
        "train_pixels": len(split.train),
        "val_pixels": len(split.val),
        "test_pixels": len(split.test),
        "spectralgpt_small_full_finetuning": model,
        "svm_rbf": {**svm, "C": svm_c},
        "svm_rbf_smoothed": {**svm_smoothed, "C": svm_c, "window": window},
        "class_map": [str(p) for p in writer.written],
        "checkpoint": str(checkpoint),
        "wall_time_s": round(time.perf_counter() - start, 1),
    }
    with atomic_write(OUTPUT_DIR / "results.json", "w") as f:
        json.dump(results, f, indent=2, default=str)
    print(_report(results, root))
    return results


def scene_folder(data_root: Path) -> Path:
    """The folder holding Indian Pines' two files: ``data_root`` or ``data_root/indian_pines``."""
    for folder in (data_root / "indian_pines", data_root):
        if all((folder / name).is_file() for name in SCENE_FILES):
            return folder.resolve()
    raise SystemExit(
        f"Indian Pines not found under {data_root}: give --data-root the folder holding "
        f"{' and '.join(SCENE_FILES)} (or its parent, with an indian_pines/ subfolder)."
    )


def svm_baseline(
    spectra: np.ndarray, classes: np.ndarray, train: np.ndarray, num_classes: int
) -> tuple[np.ndarray, float]:
    """Per-pixel RBF SVM on standardised spectra, ``C`` by 3-fold CV on the training pixels.

    Args:
        spectra: (N, C) pixel spectra.
        classes: (N,) class indices.
        train: indices of the training pixels (the only ones that fit the scaler and the SVM).
        num_classes: number of classes (columns of the result).

    Returns:
        The (N, num_classes) class log-probabilities of every pixel and the chosen ``C``.
    """
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    search = GridSearchCV(
        make_pipeline(StandardScaler(), SVC(kernel="rbf", gamma="scale")),
        {"svc__C": list(SVM_C_GRID)},
        cv=StratifiedKFold(3, shuffle=True, random_state=0),
    )
    search.fit(spectra[train], classes[train])
    best_c = float(search.best_params_["svc__C"])
    svc = SVC(kernel="rbf", gamma="scale", C=best_c, probability=True, random_state=0)
    model = make_pipeline(StandardScaler(), svc)
    model.fit(spectra[train], classes[train])
    proba = np.full((len(spectra), num_classes), 1e-6)
    proba[:, model.classes_] = np.maximum(model.predict_proba(spectra), 1e-6)
    return np.log(proba), best_c


def smooth(logp: np.ndarray, window: int) -> np.ndarray:
    """Average (H, W, C) class log-probabilities over each pixel's ``window``-wide square."""
    from scipy.ndimage import uniform_filter

    return logp if window == 1 else uniform_filter(logp, size=(window, window, 1), mode="nearest")


def choose_window(logp: np.ndarray, classes: np.ndarray, val: np.ndarray) -> int:
    """The window of :data:`SMOOTHING_WINDOWS` with the best OA on the validation pixels."""
    if len(val) == 0:
        raise SystemExit("The split holds no validation pixels: give the split a val_size > 0.")
    accuracy = {
        window: float(np.mean(smooth(logp, window).argmax(-1).ravel()[val] == classes[val]))
        for window in SMOOTHING_WINDOWS
    }
    return max(accuracy, key=accuracy.get)  # the first (smallest) window on ties


def _figures(target: np.ndarray, predicted: np.ndarray, num_classes: int) -> dict[str, float]:
    confmat = confusion_matrix(target, predicted, num_classes)
    return {
        "OA": overall_accuracy(confmat),
        "AA": average_accuracy(confmat),
        "Kappa": cohen_kappa(confmat),
    }


def _cli(subcommand: str, args: list[str]) -> Any:
    from terratorch.cli_tools import build_lightning_cli

    print(f"\n== terratorch {subcommand} {' '.join(args)}\n", flush=True)
    # LightningCLI warns when sys.argv also holds arguments (the quickstart's own).
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        return build_lightning_cli([subcommand, *args])
    finally:
        sys.argv = argv


def _report(results: dict[str, Any], root: Path) -> str:
    model, svm = results["spectralgpt_small_full_finetuning"], results["svm_rbf"]
    smoothed = results["svm_rbf_smoothed"]
    window = smoothed["window"]
    split = results["split"]
    # classes_missing is a fact about the result (empty on Indian Pines; a split warns otherwise).
    shown = {k: v for k, v in split.items() if k not in ("protocol", "classes_missing")}
    settings = ", ".join(f"{key} {value}" for key, value in shown.items())
    minutes, seconds = divmod(round(results["wall_time_s"]), 60)
    rows = [
        ("SpectralGPT, small, full fine-tuning", model),
        (f"SVM (RBF, standardised spectra, C={svm['C']:g})", svm),
        (f"SVM + {window} x {window} smoothing (k on validation)", smoothed),
    ]
    table = "\n".join(
        f"  {name:<46} {100 * f['OA']:6.2f} {100 * f['AA']:6.2f} {f['Kappa']:7.4f}"
        for name, f in rows
    )
    command = (
        "terratorch fit -c configs/experiments/indian_pines/classification/krona_plus.yaml "
        f"--data.init_args.root {root}"
    )
    return f"""
Indian Pines, {split["protocol"]} split ({settings}): {results["train_pixels"]} training and \
{results["test_pixels"]} test pixels.
This split is spatially leaky (test pixels border training pixels): docs/results.md compares
the models on spatially disjoint splits.
  {"model":<46} {"OA %":>6} {"AA %":>6} {"kappa":>7}
{table}
Class map: {", ".join(results["class_map"])}
Figures: {OUTPUT_DIR / "results.json"}; wall time {minutes} min {seconds:02d} s.

The same with the official SpectralGPT+ weights (downloaded once) and KronA+ adapters:
  {command}
then `test` / `predict` with the same arguments and
  --ckpt_path outputs/indian_pines/classification/krona_plus/version_0/checkpoints/last.ckpt
(the other methods and tasks: configs/experiments/).
"""


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python quickstart.py",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument(
        "--data-root",
        type=Path,
        required=True,
        help="folder holding indian_pines/ (or Indian Pines' two .mat files themselves)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads of torch (default 1: the small model's matrices gain little from more, "
        "and one thread stays fast when other processes share the CPU)",
    )
    parser.add_argument(
        "--max-epochs",
        type=int,
        default=None,
        help="override the config's training epochs (a shorter smoke run)",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    main()
