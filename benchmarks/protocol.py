"""What SpectralGPT and its adapters add, measured with choices made on validation only.

The evaluation protocol of docs/results.md ("Evaluation protocol"). Every row is scored on the
same split draws of Indian Pines, the same pixels:

- a split draw (``spatially_disjoint``: 16 x 16 blocks, half the labelled pixels in test blocks,
  validation blocks carved from the training side, a 4-pixel buffer; or ``per_class``: 10% of
  each class for training, a tenth of those for validation) is drawn once per seed, saved, and
  read by every row through ``split_file``;
- each row trains its candidates (learning rates; for the deep rows the checkpoint with the best
  validation OA, i.e. the steps) on the training pixels, predicts the whole scene, and averages
  each candidate's class log-probabilities over ``k x k`` neighbours for every ``k`` of
  :data:`WINDOWS` (``k = 1``: none). The candidate and ``k`` with the best validation OA are
  chosen; only then are the chosen map's test pixels read, once. The candidates, their
  validation OA and the choice are stored with the run;
- the deep rows are the shipped experiment files (``configs/experiments/``) plus overrides (the
  split, the epochs, the candidate's learning rate, ``backbone_ckpt_path``), built and fitted by
  TerraTorch's own ``build_lightning_cli``; the masked autoencoder is pre-trained per draw from
  ``configs/experiments/pretraining/indian_pines_mae.yaml`` with ``leave_out_test`` (inductive:
  no window holds a test pixel).

Rows (:data:`ROWS`): SVM (RBF; C and gamma by 3-fold cross-validation on the training pixels)
with and without smoothing, a random forest, the spectral path alone (the shipped path's layers
and width, no encoder) with and without smoothing, the quickstart's route (SpectralGPT +
spectral path, full fine-tuning) at random initialisation and from the MAE encoder, the encoder
without the path, frozen encoders with a trained head, and every adapter method on the MAE
encoder.

    python -m benchmarks.protocol --rows svm svm_smoothed --draws 0 1 --protocol spatially_disjoint
    python -m benchmarks.protocol --report-only --results-md docs/results.md
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from scipy.ndimage import uniform_filter

from benchmarks.experiments import REPO, build, load_experiment, quiet
from benchmarks.machine import machine_description
from terratorch_hsi_peft.datasets import IndianPines
from terratorch_hsi_peft.datasets.splits import Split, make_split
from terratorch_hsi_peft.metrics import (
    average_accuracy,
    cohen_kappa,
    confusion_matrix,
    overall_accuracy,
)

RUNS = REPO / "benchmarks" / "results" / "protocol_runs.jsonl"

#: Neighbourhoods over which a row's class log-probabilities may be averaged (1: none).
WINDOWS = (1, 3, 5, 7, 9, 11, 13)

#: The split of each protocol; ``seed`` is the draw.
SPLITS: dict[str, dict[str, Any]] = {
    "spatially_disjoint": {
        "block_size": 16,
        "test_fraction": 0.5,
        "patch_size": 9,
        "val_fraction": 0.2,
    },
    "per_class": {"train_size": 0.1, "val_size": 0.1},
}

#: Epochs of the deep rows per protocol: about 600 steps of 32 patches on either split.
EPOCHS = {"spatially_disjoint": 5, "per_class": 20}

#: Learning rates tried per row family (each chosen on validation, per draw).
LR_FULL = (1e-3, 3e-3)
LR_ADAPTER = (1e-3, 1e-2)
LR_HEAD = (1e-2, 3e-2)
LR_PATH = (3e-3, 1e-2)

#: MAE pre-training per draw (the quickstart's encoder; windows resized as its patches).
MAE_STEPS = 600
MAE_OVERRIDES: dict[str, Any] = {
    "data": {"img_size": 16, "stride": 1, "window_size": 9},
    "model_args": {
        "pretrained": False,
        "embed_dim": 64,
        "depth": 4,
        "num_heads": 2,
        "patch_size": 4,
        "img_size": 16,
        "decoder_embed_dim": 64,
        "decoder_depth": 2,
        "decoder_num_heads": 2,
        "mask_ratio": 0.75,
    },
    "lr": 1e-3,
}

#: The spectral-transformer rows (the issue's moonshot avenue): the quickstart's encoder on
#: one-pixel patches of all 200 z-scored bands, i.e. 67 spectral tokens of 3 bands and one
#: spatial position, without the spectral path (the encoder reads the whole spectrum).
PIXEL_DATA: dict[str, Any] = {
    "band_route": "standardize",
    "patch_size": 1,
    "img_size": 1,
    "append_spectra": False,
}
PIXEL_MODEL: dict[str, Any] = {
    "backbone_patch_size": 1,
    "backbone_img_size": 1,
    "backbone_num_bands": 200,
    # TerraTorch pads inputs by reflection to twice the patch size, which one pixel cannot give.
    "backbone_padding": None,
}
#: Epochs of the pixel rows (32 pixels a step, best validation epoch kept): a pixel costs about
#: a tenth of a 16 x 16 patch, and on draws 0-1 the best validation epoch came as late as 12.
PIXEL_EPOCHS = 20
#: Their MAE: the shipped pre-training file on single pixels (every pixel of the training side).
PIXEL_MAE_STEPS = 1500
PIXEL_MAE_OVERRIDES: dict[str, Any] = {
    "data": {
        "band_route": "standardize",
        "img_size": 1,
        "window_size": 1,
        "stride": 1,
        "batch_size": 256,
    },
    "model_args": {
        **MAE_OVERRIDES["model_args"],
        "patch_size": 1,
        "img_size": 1,
        "num_bands": 200,
    },
    "lr": 1e-3,
}

log = logging.getLogger("benchmarks.protocol")


# -- rows --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One row of the tables: what is trained, and which choices are made on validation.

    Attributes:
        name: the row's key in the runs file.
        label: how the tables name it.
        family: ``spectral`` (no encoder) or ``spectralgpt``.
        train: ``(context, lr) -> class log-probabilities (H, W, C)`` of one candidate.
        lrs: the learning rates tried (``(None,)``: none to choose).
        windows: the ``k`` tried for the neighbourhood average.
        needs_mae: trains from the draw's MAE encoder.
    """

    name: str
    label: str
    family: str
    train: Callable[[Context, float | None], np.ndarray]
    lrs: tuple[float | None, ...] = (None,)
    windows: tuple[int, ...] = WINDOWS
    needs_mae: bool = False


@dataclass
class Context:
    """One draw of one protocol: the scene, the split and the files the rows share."""

    protocol: str
    draw: int
    scene: IndianPines
    split: Split
    split_file: Path
    work: Path
    data_root: Path
    epochs: int
    mae_steps: int = MAE_STEPS
    notes: dict[str, Any] = field(default_factory=dict)
    #: Scene log-probabilities per (training function, lr): rows that differ only in their
    #: windows (``svm`` and ``svm_smoothed``) share one fit.
    fitted: dict[tuple[Any, float | None], np.ndarray] = field(default_factory=dict)

    @property
    def labels(self) -> np.ndarray:
        """(H, W) labels, 0 unlabelled."""
        return self.scene.labels

    def spectra(self) -> tuple[np.ndarray, np.ndarray]:
        """Every pixel's spectrum z-scored on the training pixels (N, B), and train targets."""
        cube = self.scene.image.reshape(-1, self.scene.num_bands).astype(np.float64)
        train = cube[self.split.train]
        mean, std = train.mean(0), train.std(0) + 1e-8
        return ((cube - mean) / std).astype(np.float32), self.labels.ravel()[self.split.train] - 1


def _svm(context: Context, lr: float | None) -> np.ndarray:
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.svm import SVC

    x, y = context.spectra()
    grid = GridSearchCV(
        SVC(kernel="rbf"),
        {"C": [1, 10, 100, 1000], "gamma": ["scale", 0.001, 0.01]},
        cv=StratifiedKFold(3, shuffle=True, random_state=context.draw),
        n_jobs=1,
    )
    grid.fit(x[context.split.train], y)
    context.notes["svm_cv"] = {k: str(v) for k, v in grid.best_params_.items()}
    model = SVC(kernel="rbf", probability=True, random_state=context.draw, **grid.best_params_)
    model.fit(x[context.split.train], y)
    return _scene_logp(context, model.predict_proba(x), model.classes_)


def _random_forest(context: Context, lr: float | None) -> np.ndarray:
    from sklearn.ensemble import RandomForestClassifier

    x, y = context.spectra()
    model = RandomForestClassifier(200, random_state=context.draw, n_jobs=1)
    model.fit(x[context.split.train], y)
    return _scene_logp(context, model.predict_proba(x), model.classes_)


def _scene_logp(context: Context, proba: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """(H, W, C) log-probabilities from a classifier's (N, classes seen) probabilities."""
    height, width = context.scene.shape
    full = np.full((height * width, context.scene.num_classes), 1e-6)
    full[:, classes] = np.maximum(proba, 1e-6)
    return np.log(full / full.sum(1, keepdims=True)).reshape(height, width, -1)


def _path_alone(context: Context, lr: float | None) -> np.ndarray:
    """The shipped spectral path (its layers and width) with its own head, no encoder.

    Trained on the training pixels in batches of 32 for the deep rows' steps, with the shipped
    AdamW weight decay; the checkpoint (every 1/5 of the steps) with the best validation OA is
    kept, as the deep rows' ``ModelCheckpoint`` does.
    """
    from terratorch_hsi_peft.models.spectral_path import PixelMLP
    from terratorch_hsi_peft.models.spectral_path_spec import SpectralPathSpec

    quickstart = load_experiment("quickstart")["model"]["init_args"]
    width = SpectralPathSpec.from_model_args(quickstart["model_args"]).width
    x, y = context.spectra()
    torch.manual_seed(context.draw)
    classes = context.scene.num_classes
    model = torch.nn.Sequential(PixelMLP(x.shape[1], width, width), torch.nn.Linear(width, classes))
    weight_decay = quickstart["optimizer_hparams"]["weight_decay"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    train_x = torch.from_numpy(x[context.split.train])[:, :, None, None]
    train_y = torch.from_numpy(y).long()
    val = context.split.val
    val_x = torch.from_numpy(x[val])[:, :, None, None]
    val_y = torch.from_numpy(context.labels.ravel()[val] - 1).long()
    steps = context.epochs * -(-len(train_y) // 32)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = torch.Generator().manual_seed(context.draw)
    best, best_state = -1.0, None
    for step in range(1, steps + 1):
        index = torch.randint(len(train_y), (32,), generator=generator)
        model.train()
        loss = torch.nn.functional.cross_entropy(
            model_logits(model, train_x[index]), train_y[index]
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        if step % max(steps // 5, 1) == 0 or step == steps:
            with torch.no_grad():
                model.eval()
                score = (model_logits(model, val_x).argmax(1) == val_y).float().mean().item()
            if score > best:
                best, best_state = score, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.eval()
    with torch.no_grad():
        logits = model_logits(model, torch.from_numpy(x)[:, :, None, None])
    height, width_ = context.scene.shape
    return torch.log_softmax(logits, 1).numpy().reshape(height, width_, -1)


def model_logits(model: torch.nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """(N, C) logits of the path-alone model for (N, B, 1, 1) spectra."""
    features = model[0](x).flatten(1)
    return model[1](features)


# -- the deep rows, from the shipped experiment files ------------------------------------------


def _fitload_experiment(
    context: Context,
    name: str,
    tag: str,
    lr: float,
    model_args: dict[str, Any] | None = None,
    drop_model_args: tuple[str, ...] = (),
    task_args: dict[str, Any] | None = None,
    data_args: dict[str, Any] | None = None,
    epochs: int | None = None,
) -> np.ndarray:
    """Fit ``configs/experiments/<name>.yaml`` plus overrides; the scene's log-probabilities.

    Overrides: the draw's ``split_file``, the protocol's epochs (the cosine's ``T_max`` with
    them), ``lr``, ``model_args`` updated (``drop_model_args`` removed), ``task_args``,
    ``data_args``, ``epochs`` (default: the protocol's); the
    trainer keeps the checkpoint with the best ``val/OA`` (checked every epoch), which is
    restored before the whole scene is predicted.
    """
    config = load_experiment(name)
    run_dir = context.work / f"{tag}_lr{lr:g}"
    data = config["data"]["init_args"]
    data.pop("split", None)
    data.update(split_file=str(context.split_file), root=str(context.data_root / "indian_pines"))
    data.pop("num_workers", None)
    task = config["model"]["init_args"]
    task["lr"] = lr
    if epochs is not None:  # the run's record holds the protocol's epochs: note the row's own
        context.notes["epochs"] = epochs
    epochs = epochs or context.epochs
    if task.get("scheduler") == "CosineAnnealingLR":
        task["scheduler_hparams"]["T_max"] = epochs
    task.update(task_args or {})
    args = task["model_args"]
    for key in drop_model_args:
        args.pop(key, None)
    if "spectral_path" not in args:  # the path's input, own loss and lr go with it
        data["append_spectra"] = False
        task.pop("aux_loss", None)
        task.pop("lr_overrides", None)
    args.update(model_args or {})
    data.update(data_args or {})
    config["seed_everything"] = context.draw
    trainer = config["trainer"]
    trainer.update(
        max_epochs=epochs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(run_dir),
        callbacks=[
            {"class_path": "terratorch_hsi_peft.callbacks.HyperspectralMetrics"},
            {
                "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                "init_args": {
                    "dirpath": str(run_dir / "checkpoints"),
                    "monitor": "val/OA",
                    "mode": "max",
                    "save_top_k": 1,
                    "save_weights_only": True,
                },
            },
        ],
    )
    with quiet():
        cli = build(config, run_dir)
        cli.trainer.fit(cli.model, cli.datamodule)
        best = cli.trainer.checkpoint_callback.best_model_path
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        cli.model.load_state_dict(state)
        logp = _predict_scene(cli.model, cli.datamodule, context)
    # The datamodule read the draw's split file: the same pixels as every other row.
    if not np.array_equal(cli.datamodule.split.train, context.split.train):
        raise RuntimeError(f"{name}: the datamodule's training pixels differ from the draw's")
    context.notes.setdefault("best_epoch", {})[f"{tag}_lr{lr:g}"] = _epoch_of(best)
    return logp


def _epoch_of(checkpoint: str) -> int | None:
    stem = Path(checkpoint).stem  # epoch=3-step=488
    with contextlib.suppress(ValueError, IndexError):
        return int(stem.split("epoch=")[1].split("-")[0])
    return None


@torch.inference_mode()
def _predict_scene(task: Any, datamodule: Any, context: Context) -> np.ndarray:
    """(H, W, C) class log-probabilities of every pixel of the scene (patch datamodule)."""
    datamodule.batch_size = 512  # inference only: larger batches, the same predictions
    datamodule.setup("predict")
    loader = datamodule.predict_dataloader()
    dataset = datamodule.predict_dataset  # set by the loader: its samples' centre pixels
    model = task.model.eval()
    height, width = context.scene.shape
    out = np.zeros((height * width, context.scene.num_classes), dtype=np.float32)
    start = 0
    for batch in loader:
        batch = datamodule.on_after_batch_transfer(batch, 0)
        logits = model(batch["image"]).output
        pixels = dataset.pixels[start : start + len(logits)]
        out[np.asarray(pixels)] = torch.log_softmax(logits.float(), 1).numpy()
        start += len(logits)
    if start != height * width:
        raise RuntimeError(f"predicted {start} pixels of {height * width}")
    return out.reshape(height, width, -1)


def _pretrain_mae(context: Context, pixel: bool = False) -> Path:
    """The draw's MAE encoder: the shipped pre-training file, inductive (``leave_out_test``).

    ``pixel``: the spectral transformer's encoder (:data:`PIXEL_MAE_OVERRIDES`), else the
    quickstart's (:data:`MAE_OVERRIDES`).
    """
    prefix = "pixel_mae" if pixel else "mae"  # of the notes' keys
    target = context.work / ("mae_pixel" if pixel else "mae") / "encoder.pth"
    if target.is_file():  # pre-trained by an earlier row of the draw
        return target
    overrides = PIXEL_MAE_OVERRIDES if pixel else MAE_OVERRIDES
    steps = PIXEL_MAE_STEPS if pixel else context.mae_steps
    config = load_experiment("pretraining/indian_pines_mae")
    data = config["data"]["init_args"]
    (source,) = data["scenes"]
    source.pop("split", None)
    source.update(split_file=str(context.split_file), leave_out_test=True)
    if context.protocol != "spatially_disjoint":
        source["leave_out_test"] = False  # per-class test pixels are scattered: see the report
    data.update(root=str(context.data_root / "indian_pines"), **overrides["data"])
    config["model"]["init_args"]["model_args"].update(overrides["model_args"])
    config["optimizer"]["init_args"]["lr"] = overrides["lr"]
    config["lr_scheduler"]["init_args"]["T_max"] = steps
    config["seed_everything"] = context.draw
    config["trainer"].update(
        max_steps=steps,
        max_epochs=None,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        default_root_dir=str(target.parent),
        callbacks=[
            {
                "class_path": "terratorch_hsi_peft.callbacks.EncoderExport",
                "init_args": {"dirpath": str(target.parent)},
            }
        ],
    )
    started = time.time()
    with quiet():
        cli = build(config, target.parent)
        cli.trainer.fit(cli.model, cli.datamodule)
    context.notes[f"{prefix}_s"] = round(time.time() - started, 1)
    loss = float(cli.trainer.callback_metrics.get("train/loss", float("nan")))
    context.notes[f"{prefix}_loss"] = loss
    return target


def _from_mae(context: Context, pixel: bool = False) -> dict[str, Any]:
    """``model_args`` that start the encoder from the draw's MAE (:func:`_pretrain_mae`)."""
    encoder = _pretrain_mae(context, pixel)
    return {"backbone_pretrained": False, "backbone_ckpt_path": str(encoder)}


def _quickstart(
    tag: str, mae: bool = False, path: bool = True, method: str | None = None, frozen: bool = False
) -> Callable[[Context, float | None], np.ndarray]:
    """A row built from the quickstart's experiment file (its encoder, patches and recipe)."""

    def train(context: Context, lr: float | None) -> np.ndarray:
        model_args: dict[str, Any] = _from_mae(context) if mae else {}
        if method is not None:
            method_file = REPO / "configs" / "methods" / f"{method}.yaml"
            model_args["peft_config"] = yaml.safe_load(method_file.read_text())
        drop = () if path else ("spectral_path",)
        task_args = {"freeze_backbone": True} if frozen else None
        return _fitload_experiment(context, "quickstart", tag, lr, model_args, drop, task_args)

    return train


def _spectral_transformer(
    tag: str, mae: bool = False
) -> Callable[[Context, float | None], np.ndarray]:
    """A row from the quickstart's file on one-pixel patches (:data:`PIXEL_DATA`)."""

    def train(context: Context, lr: float | None) -> np.ndarray:
        model_args = {**PIXEL_MODEL, **(_from_mae(context, pixel=True) if mae else {})}
        return _fitload_experiment(
            context,
            "quickstart",
            tag,
            lr,
            model_args,
            ("spectral_path",),
            data_args=PIXEL_DATA,
            epochs=PIXEL_EPOCHS,
        )

    return train


#: The adapter methods, by registry name, with the names the papers give them.
ADAPTERS = {
    "krona_plus": "KronA+",
    "krona": "KronA",
    "lokr": "LoKr",
    "lora": "LoRA",
    "lora_plus": "LoRA+",
    "loha": "LoHa",
}

ROWS: dict[str, Row] = {
    row.name: row
    for row in [
        Row("svm", "SVM (RBF, CV-tuned), per pixel", "spectral", _svm, windows=(1,)),
        Row("svm_smoothed", "SVM + k x k smoothing", "spectral", _svm),
        Row("random_forest", "Random forest + k x k smoothing", "spectral", _random_forest),
        Row("path", "Spectral path alone, per pixel", "spectral", _path_alone, LR_PATH, (1,)),
        Row(
            "path_smoothed",
            "Spectral path alone + k x k smoothing",
            "spectral",
            _path_alone,
            LR_PATH,
        ),
        Row(
            "gpt_random_full",
            "SpectralGPT + path, random init, full fine-tuning",
            "spectralgpt",
            _quickstart("random_full"),
            LR_FULL,
        ),
        Row(
            "gpt_random_nopath",
            "SpectralGPT without the path, random init, full",
            "spectralgpt",
            _quickstart("random_nopath", path=False),
            LR_FULL,
        ),
        Row(
            "gpt_random_frozen",
            "Frozen random SpectralGPT + head (no path)",
            "spectralgpt",
            _quickstart("random_frozen", path=False, frozen=True),
            LR_HEAD,
        ),
        Row(
            "gpt_mae_full",
            "SpectralGPT + path, MAE encoder, full fine-tuning",
            "spectralgpt",
            _quickstart("mae_full", mae=True),
            LR_FULL,
            needs_mae=True,
        ),
        Row(
            "gpt_mae_frozen",
            "Frozen MAE SpectralGPT + head (no path)",
            "spectralgpt",
            _quickstart("mae_frozen", mae=True, path=False, frozen=True),
            LR_HEAD,
            needs_mae=True,
        ),
        *[
            Row(
                f"gpt_mae_{m}",
                f"SpectralGPT + path, MAE encoder, {label}",
                "spectralgpt",
                _quickstart(f"mae_{m}", mae=True, method=m),
                LR_ADAPTER,
                needs_mae=True,
            )
            for m, label in ADAPTERS.items()
        ],
        Row(
            "gpt_pixel_random",
            "SpectralGPT on 1-pixel patches (spectral transformer), random init, full",
            "spectralgpt",
            _spectral_transformer("pixel_random"),
            LR_FULL,
        ),
        Row(
            "gpt_pixel_mae",
            "SpectralGPT on 1-pixel patches, pixel-MAE encoder, full",
            "spectralgpt",
            _spectral_transformer("pixel_mae", mae=True),
            LR_FULL,
            needs_mae=True,
        ),
    ]
}

#: The rows of the ten-draw comparison (issue 30's headline rows).
HEADLINE = (
    "svm_smoothed",
    "path_smoothed",
    "gpt_random_full",
    "gpt_mae_full",
    "gpt_mae_krona_plus",
)


# -- selection and scoring ---------------------------------------------------------------------


def smooth(logp: np.ndarray, window: int) -> np.ndarray:
    """Average (H, W, C) log-probabilities over each pixel's ``window x window`` neighbours."""
    if window == 1:
        return logp
    return uniform_filter(logp, size=(window, window, 1), mode="nearest")


def accuracy_on(logp: np.ndarray, labels: np.ndarray, pixels: np.ndarray) -> float:
    """OA of the argmax of ``logp`` on flat ``pixels`` (labels 1..K)."""
    predicted = logp.reshape(-1, logp.shape[-1]).argmax(1)[pixels]
    return float(np.mean(predicted == labels.ravel()[pixels] - 1))


def scores(logp: np.ndarray, labels: np.ndarray, pixels: np.ndarray) -> dict[str, float]:
    """OA, AA and kappa in % of the argmax of ``logp`` on ``pixels``."""
    predicted = logp.reshape(-1, logp.shape[-1]).argmax(1)[pixels]
    truth = labels.ravel()[pixels] - 1
    matrix = confusion_matrix(truth, predicted, logp.shape[-1])
    return {
        "oa": 100 * overall_accuracy(matrix),
        "aa": 100 * average_accuracy(matrix),
        "kappa": 100 * cohen_kappa(matrix),
    }


def run_row(row: Row, context: Context) -> dict[str, Any]:
    """Train every candidate of ``row``, choose on validation, then read test once."""
    candidates, best = [], None
    started = time.time()
    for lr in row.lrs:
        key = (row.train, lr)
        if key not in context.fitted:
            context.fitted[key] = row.train(context, lr)
        logp = context.fitted[key]
        for window in row.windows:
            smoothed = smooth(logp, window)
            val = 100 * accuracy_on(smoothed, context.labels, context.split.val)
            candidates.append({"lr": lr, "window": window, "val_oa": round(val, 3)})
            if best is None or val > best[0]:
                best = (val, lr, window, smoothed)
    val, lr, window, chosen = best
    test = scores(chosen, context.labels, context.split.test)  # read once, for the choice
    return {
        "row": row.name,
        "protocol": context.protocol,
        "draw": context.draw,
        "chosen": {"lr": lr, "window": window, "val_oa": round(val, 3)},
        "candidates": candidates,
        "test": {k: round(v, 3) for k, v in test.items()},
        "pixels": {
            "train": len(context.split.train),
            "val": len(context.split.val),
            "test": len(context.split.test),
        },
        "notes": dict(context.notes),
        "fit_s": round(time.time() - started, 1),
    }


# -- the runs file -----------------------------------------------------------------------------


def read_runs(path: Path) -> list[dict[str, Any]]:
    """The runs of ``path`` (one JSON object per line; a missing file: none)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_run(path: Path, record: dict[str, Any]) -> None:
    """Append one run as a line, flushed and synced: a killed study loses at most that run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def draw_context(protocol: str, draw: int, data_root: Path, work: Path) -> Context:
    """The scene, the draw's split (saved under ``work``) and its folder."""
    scene = IndianPines(root=str(data_root / "indian_pines"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a class on one side only: recorded in the split
        split = make_split(scene.labels, protocol, draw, **SPLITS[protocol])
    folder = work / protocol / f"draw{draw}"
    folder.mkdir(parents=True, exist_ok=True)
    split_file = folder / "split.npz"
    split.save(split_file)
    return Context(protocol, draw, scene, split, split_file, folder, data_root, EPOCHS[protocol])


def main(argv: list[str] | None = None) -> None:
    """Run the rows and draws asked for (skipping those in the runs file), or only report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", choices=sorted(ROWS), default=list(HEADLINE))
    parser.add_argument("--draws", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--protocol", choices=sorted(SPLITS), default="spatially_disjoint")
    parser.add_argument(
        "--data-root", type=Path, default=Path(os.environ.get("HSI_DATA", "../shared/data"))
    )
    parser.add_argument("--runs", type=Path, default=RUNS, help="JSON-lines file of the runs")
    parser.add_argument("--work-dir", type=Path, default=None, help="splits, checkpoints, MAE")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--epochs", type=int, help="deep rows' epochs (default: per protocol)")
    parser.add_argument("--mae-steps", type=int, default=MAE_STEPS, help="MAE steps per draw")
    parser.add_argument("--results-md", type=Path, help="write the report section into this file")
    parser.add_argument("--report-only", action="store_true", help="only rebuild the report")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.report_only:
        if not (args.data_root / "indian_pines").is_dir():
            parser.error(f"{args.data_root / 'indian_pines'} does not exist; pass --data-root.")
        torch.set_num_threads(args.threads)
        work = args.work_dir or Path(tempfile.mkdtemp(prefix="protocol-"))
        done = {(r["row"], r["protocol"], r["draw"]) for r in read_runs(args.runs)}
        for draw in args.draws:
            todo = [r for r in args.rows if (r, args.protocol, draw) not in done]
            if not todo:
                continue
            context = draw_context(args.protocol, draw, args.data_root.resolve(), work.resolve())
            context.epochs = args.epochs or context.epochs
            context.mae_steps = args.mae_steps
            for name in todo:
                context.notes = {}
                record = run_row(ROWS[name], context)
                record["machine"] = machine_description(run_threads=[args.threads])
                record["epochs"], record["mae_steps"] = context.epochs, context.mae_steps
                append_run(args.runs, record)
                log.info(
                    "%s draw %d %s: val %.2f (lr %s, k %d) test OA %.2f in %.0f s",
                    args.protocol,
                    draw,
                    name,
                    record["chosen"]["val_oa"],
                    record["chosen"]["lr"],
                    record["chosen"]["window"],
                    record["test"]["oa"],
                    record["fit_s"],
                )
    if args.results_md:
        from benchmarks.docgen.protocol_report import write_report

        write_report(read_runs(args.runs), args.results_md)


if __name__ == "__main__":
    main()
