"""What the accuracy and scene-mapping benchmarks share: models, inference loops, report files.

Both formulations use stock TerraTorch tasks built through the Python API:

- classification: ``HyperspectralPatchDataModule`` (a ``window x window`` patch per pixel, resized
  to ``img_size``) + ``ClassificationTask``; SpectralGPT -> mean of the last layer's tokens
  (``AggregateTokens``) -> MLP head, as the source paper;
- segmentation: ``HyperspectralSceneDataModule`` (``tile_size`` tiles) +
  ``SemanticSegmentationTask``;
  SpectralGPT's four features -> ``LearnedInterpolateToPyramidal`` -> ``UNetDecoder``, plus the
  factory's per-pixel spectral path (``spectral_path``) to the head.

Adapters come from the plugin's ``PEFTEncoderDecoderFactory`` (Q and V of every block, as the
source paper); full fine-tuning is the same factory without ``peft_config``.
"""

from __future__ import annotations

import argparse
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from terratorch.tasks import ClassificationTask, SemanticSegmentationTask

import terratorch_hsi_peft  # noqa: F401  (registers the backbone and the factory)
from benchmarks.machine import machine_description
from terratorch_hsi_peft.datamodules import (
    IGNORE_INDEX,
    HyperspectralPatchDataModule,
    HyperspectralSceneDataModule,
)
from terratorch_hsi_peft.models.spectral_path_spec import PATH_HEAD
from terratorch_hsi_peft.peft import get_method, method_names

__all__ = [
    "METHODS",
    "QUICK",
    "SMALL",
    "VIT_BASE",
    "Geometry",
    "build_task",
    "check_data_root",
    "machine_description",
    "method_choices",
    "peft_config_for",
    "predict_patches",
    "predict_tiles",
    "quiet_libraries",
    "trainable_parameters",
]

_TARGETS = ["attn.q", "attn.v"]

#: The published accuracy grid (docs/results.md): ``None`` is full fine-tuning, otherwise the
#: factory's peft_config. Kept explicit so the published results stay reproducible when methods
#: are added; any other registered method runs through :func:`peft_config_for`.
METHODS: dict[str, dict[str, Any] | None] = {
    "FULL": None,
    "LORA": {"method": "LORA", "peft_config_kwargs": {"target_modules": _TARGETS, "r": 4}},
    "LORA_PLUS": {
        "method": "LORA_PLUS",
        "peft_config_kwargs": {"target_modules": _TARGETS, "r": 4, "lr_ratio": 16},
    },
    "KRONA": {"method": "KRONA", "peft_config_kwargs": {"target_modules": _TARGETS}},
    "KRONA_PLUS": {
        "method": "KRONA_PLUS",
        "peft_config_kwargs": {"target_modules": _TARGETS, "lr_ratio": 16},
    },
    "LOKR": {"method": "LOKR", "peft_config_kwargs": {"target_modules": _TARGETS, "r": 4}},
}
_unknown = [m for m, c in METHODS.items() if c is not None and get_method(c["method"]).name != m]
if _unknown:  # a renamed or removed method must not leave the published grid silently wrong
    raise RuntimeError(f"METHODS entries {_unknown} do not name their registered method.")


def method_choices() -> list[str]:
    """``FULL``, the published grid's methods, then every other registered method."""
    return [*METHODS, *(m for m in method_names() if m not in METHODS)]


def peft_config_for(method: str) -> dict[str, Any] | None:
    """The factory's peft_config of ``method`` (None for ``FULL``).

    The published grid's entry where it has one; otherwise the registered method on ``attn.q``
    and ``attn.v`` with ``r=4`` and ``lr_ratio=16`` where it takes them (the grid's choices),
    with ``backend: plugin`` (a name Hugging Face peft also has is the plugin's here).

    Raises:
        ValueError: ``method`` is neither ``FULL`` nor a registered method.
    """
    if method in METHODS:
        return METHODS[method]
    if method not in method_names():
        raise ValueError(f"Unknown method {method!r}; choose among {method_choices()}.")
    keys = get_method(method).options.option_names()
    kwargs: dict[str, Any] = {"target_modules": _TARGETS}
    kwargs.update({key: value for key, value in (("r", 4), ("lr_ratio", 16)) if key in keys})
    return {"method": method, "backend": "plugin", "peft_config_kwargs": kwargs}


@dataclass(frozen=True)
class Geometry:
    """SpectralGPT encoder size and the input size both formulations feed it.

    Attributes:
        embed_dim, depth, num_heads: encoder width, blocks and attention heads.
        img_size: classification input side: the patch around each pixel is resized to it.
        window: side of the patch cut around each pixel (classification formulation).
        tile_size: side of the tiles of the segmentation formulation (its input side).
        head_dim: hidden width of the classification MLP head.
        decoder_channels: UNet decoder channels (segmentation formulation).
        patch_size: spatial side of a token (SpectralGPT's 8; 4 gives small inputs more tokens).
        spectral_path: hidden width of the segmentation model's per-pixel spectral path
            (``model_args.spectral_path.width``); None: the stock UNet model.
        full_spectrum: the path reads each pixel's whole z-scored spectrum, which the tile
            datamodule appends (``append_spectra``, ``model_args.spectral_path.bands``); None:
            it reads the routed bands.
        path_loss: weight of the path's own loss (``model_args.spectral_path.loss`` and the
            task's ``aux_loss: {spectral_path: <weight>}``); None: none.
        path_lr: learning rate of the path's parameters (the task's
            ``lr_overrides: {spectral_path: <lr>}``); None: the task's.
        path_window: side of the neighbourhood the segmentation path's output is averaged over
            (``model_args.spectral_path.window``); None: each pixel's own.
    """

    embed_dim: int
    depth: int
    num_heads: int
    img_size: int = 32
    window: int = 9
    tile_size: int = 32
    head_dim: int = 64
    decoder_channels: tuple[int, int, int, int] = (64, 32, 16, 16)
    patch_size: int = 8
    spectral_path: int | None = None
    full_spectrum: bool | None = None
    path_loss: float | None = None
    path_lr: float | None = None
    path_window: int | None = None

    def backbone_args(self, num_bands: int, img_size: int, ckpt_path: str | None) -> dict[str, Any]:
        """``backbone_*`` model_args of this geometry (random init unless ``ckpt_path``)."""
        return {
            "backbone": "spectralgpt_vit_base",
            "backbone_num_bands": num_bands,
            "backbone_img_size": img_size,
            "backbone_embed_dim": self.embed_dim,
            "backbone_depth": self.depth,
            "backbone_num_heads": self.num_heads,
            "backbone_patch_size": self.patch_size,
            "backbone_ckpt_path": ckpt_path,
        }

    def describe(self) -> str:
        """One line naming the encoder size and inputs, for tables and logs."""
        return (
            f"SpectralGPT encoder embed_dim {self.embed_dim}, depth {self.depth}, "
            f"{self.num_heads} heads, {self.patch_size}x{self.patch_size}x3 tubelets; "
            f"{self.window}x{self.window} patches resized to {self.img_size}x{self.img_size}; "
            f"{self.tile_size}x{self.tile_size} tiles"
            + (f", {self.spectral_path}-channel spectral path" if self.spectral_path else "")
            + (" on the whole spectrum" if self.spectral_path and self.full_spectrum else "")
            + (f", its own loss x{self.path_loss}" if self.spectral_path and self.path_loss else "")
            + (f", lr {self.path_lr:g}" if self.spectral_path and self.path_lr else "")
            + (
                f", averaged over {self.path_window}x{self.path_window} neighbours (segmentation)"
                if self.spectral_path and self.path_window
                else ""
            )
        )


#: The shipped segmentation configs' refinements of the spectral path: its own loss's weight
#: (``aux_loss``), its learning rate (``lr_overrides``) and the neighbourhood its output is
#: averaged over (``spectral_path.window``).
PATH_LOSS_WEIGHT = 1.0
PATH_LR = 1e-2
PATH_WINDOW = 5
#: Encoder of the CPU grid (random init) and of the official weights.
SMALL = Geometry(
    embed_dim=32,
    depth=2,
    num_heads=2,
    img_size=16,
    head_dim=32,
    spectral_path=32,
    full_spectrum=True,
    path_loss=PATH_LOSS_WEIGHT,
    path_lr=PATH_LR,
    path_window=PATH_WINDOW,
)
VIT_BASE = Geometry(
    embed_dim=768,
    depth=12,
    num_heads=12,
    img_size=32,
    head_dim=256,
    spectral_path=64,
    full_spectrum=True,
    path_loss=PATH_LOSS_WEIGHT,
    path_lr=PATH_LR,
    path_window=PATH_WINDOW,
)
#: ``--quick``: a one-block encoder, one seed, two steps, on subsets of the test pixels.
QUICK = Geometry(
    embed_dim=16,
    depth=1,
    num_heads=2,
    img_size=16,
    head_dim=16,
    decoder_channels=(16, 8, 8, 8),
    spectral_path=8,
    full_spectrum=True,
    path_loss=PATH_LOSS_WEIGHT,
    path_lr=PATH_LR,
    path_window=PATH_WINDOW,
)


def check_data_root(parser: argparse.ArgumentParser, data_root: Path) -> None:
    """Stop the script with a clear message when ``data_root`` holds no ``indian_pines/``."""
    if not (data_root / "indian_pines").is_dir():
        parser.error(
            f"{data_root / 'indian_pines'} does not exist; point --data-root at the folder "
            "holding indian_pines/Indian_pines_corrected.mat and Indian_pines_gt.mat."
        )


def classification_model_args(
    geometry: Geometry, num_bands: int, num_classes: int, ckpt_path: str | None
) -> dict[str, Any]:
    """model_args: last layer's tokens, mean-pooled, then an MLP head (the source paper's)."""
    return {
        **geometry.backbone_args(num_bands, geometry.img_size, ckpt_path),
        "backbone_out_indices": [-1],
        "necks": [{"name": "AggregateTokens", "pooling": "mean"}],
        "decoder": "IdentityDecoder",
        "head_dim_list": [geometry.head_dim],
        "num_classes": num_classes,
    }


def segmentation_model_args(
    geometry: Geometry, num_bands: int, num_classes: int, ckpt_path: str | None, spectra: int = 0
) -> dict[str, Any]:
    """model_args: four evenly spaced layers ending with the last -> image pyramid -> UNet.

    ``spectra``: bands the datamodule appends for the spectral path (its ``num_spectra``).
    """
    layers = [max(0, (k + 1) * geometry.depth // 4 - 1) for k in range(4)]  # [2, 5, 8, 11] for 12
    return {
        **geometry.backbone_args(num_bands, geometry.tile_size, ckpt_path),
        "necks": [
            {"name": "SelectIndices", "indices": layers},
            {"name": "ReshapeTokensToImage"},
            {"name": "LearnedInterpolateToPyramidal"},
        ],
        "decoder": "UNetDecoder",
        "decoder_channels": list(geometry.decoder_channels),
        "num_classes": num_classes,
        **({"spectral_path": path_model_args(geometry, spectra)} if geometry.spectral_path else {}),
    }


def path_model_args(geometry: Geometry, spectra: int) -> dict[str, Any]:
    """``model_args.spectral_path`` of ``geometry``'s path (``spectra`` appended bands)."""
    return {
        "width": geometry.spectral_path,
        **({"bands": spectra} if spectra else {}),
        **({"loss": True} if geometry.path_loss else {}),
        **({"window": geometry.path_window} if geometry.path_window else {}),
    }


def build_task(
    formulation: str,
    geometry: Geometry,
    num_bands: int,
    num_classes: int,
    method: str,
    lr: float,
    ckpt_path: str | None = None,
    spectra: int = 0,
    **task_args: Any,
) -> ClassificationTask | SemanticSegmentationTask:
    """A stock TerraTorch task whose model comes from ``PEFTEncoderDecoderFactory``.

    Args:
        formulation: ``"classification"`` (patch per pixel) or ``"segmentation"`` (tiles).
        geometry: encoder size and inputs.
        num_bands: bands after the datamodule's band route.
        num_classes: K.
        method: ``FULL`` or a registered method (see :func:`peft_config_for`).
        lr: AdamW learning rate (adapters, head and decoder alike).
        ckpt_path: SpectralGPT checkpoint (official layout) loaded into the encoder.
        spectra: bands the tile datamodule appends for the spectral path (``num_spectra``).
        task_args: more task arguments (``optimizer_hparams``, ``custom_loss_kwargs``, ...);
            they override the defaults here.
    """
    peft_config = peft_config_for(method)
    if formulation == "classification":
        model_args = classification_model_args(geometry, num_bands, num_classes, ckpt_path)
    elif formulation == "segmentation":
        model_args = segmentation_model_args(geometry, num_bands, num_classes, ckpt_path, spectra)
    else:
        raise ValueError(f"formulation={formulation!r}: use 'classification' or 'segmentation'.")
    if peft_config is not None:
        model_args["peft_config"] = peft_config
    common = {
        "model_args": model_args,
        "model_factory": "PEFTEncoderDecoderFactory",
        "loss": "ce",
        "lr": lr,
        "optimizer": "AdamW",
        "ignore_index": IGNORE_INDEX,
        **path_task_args(geometry, model_args),
        **task_args,
    }
    if formulation == "classification":
        return ClassificationTask(**common)
    return SemanticSegmentationTask(**common, plot_on_val=False)


def path_task_args(geometry: Geometry, model_args: dict[str, Any]) -> dict[str, Any]:
    """Task arguments of the spectral path's refinements (its own loss, its learning rate)."""
    if "spectral_path" not in model_args:
        return {}
    return {
        **({"aux_loss": {PATH_HEAD: geometry.path_loss}} if geometry.path_loss else {}),
        **({"lr_overrides": {"spectral_path": geometry.path_lr}} if geometry.path_lr else {}),
    }


def trainable_parameters(task: torch.nn.Module) -> tuple[int, int]:
    """(trainable encoder parameters, trainable parameters in all) of a task's model."""
    encoder = sum(p.numel() for p in task.model.encoder.parameters() if p.requires_grad)
    total = sum(p.numel() for p in task.model.parameters() if p.requires_grad)
    return encoder, total


@torch.inference_mode()
def predict_patches(
    task: ClassificationTask,
    datamodule: HyperspectralPatchDataModule,
    stage: str,
    device: torch.device,
    max_batches: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Class index of every sample of a stage (``test``: split pixels; ``predict``: the scene).

    ``max_batches`` stops early (quick smoke runs score a subset of the test pixels).

    Returns:
        ``(predictions, targets)``; ``targets`` is None for ``predict``.
    """
    loader = getattr(datamodule, f"{stage}_dataloader")()
    model = task.model.to(device).eval()
    predictions, targets = [], []
    for index, batch in enumerate(loader):
        if index == max_batches:
            break
        batch = datamodule.on_after_batch_transfer({k: v.to(device) for k, v in batch.items()}, 0)
        predictions.append(model(batch["image"]).output.argmax(dim=1).cpu())
        if "label" in batch:
            targets.append(batch["label"].cpu())
    return (
        torch.cat(predictions).numpy(),
        torch.cat(targets).numpy() if targets else None,
    )


@torch.inference_mode()
def predict_tiles(
    task: SemanticSegmentationTask,
    datamodule: HyperspectralSceneDataModule,
    stage: str,
    device: torch.device,
    max_batches: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Predictions of a stage's tiles (the first ``max_batches`` batches when given).

    Returns:
        For ``test``: flat (predictions, targets) at the owned test pixels. For ``predict``: the
        (H, W) class map stitched from tile centres, and None.
    """
    loader = getattr(datamodule, f"{stage}_dataloader")()
    model = task.model.to(device).eval()
    class_map = np.full(datamodule.scene.shape, -1, dtype=np.int64)
    predictions, targets = [], []
    start = 0
    for index, batch in enumerate(loader):
        if index == max_batches:
            break
        logits = model(batch["image"].to(device)).output
        tiles = logits.argmax(dim=1).cpu()
        if stage == "predict":
            indices = list(range(start, start + len(tiles)))
            datamodule.paste_predictions(class_map, indices, tiles)
            start += len(tiles)
        else:
            owned = batch["mask"] != IGNORE_INDEX
            predictions.append(tiles[owned])
            targets.append(batch["mask"][owned])
    if stage == "predict":
        return class_map, None
    return torch.cat(predictions).numpy(), torch.cat(targets).numpy()


#: Loggers :func:`quiet_libraries` raises to ERROR.
QUIET_LOGGERS = ("lightning.pytorch", "lightning.fabric", "terratorch", "terratorch_hsi_peft")


def quiet_libraries() -> None:
    """Keep stdout for the table: no Lightning banners, no library deprecation chatter."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    # Validation is off (limit_val_batches=0), so the tasks' epoch-end metrics see no update.
    warnings.filterwarnings("ignore", message=".*was called before the ``update`` method.*")
