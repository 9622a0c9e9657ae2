"""Loading SpectralGPT checkpoints: fetch, read safely, adapt to the model, report.

- ``fetch_checkpoint``: a local file, or an http(s) URL downloaded once into the cache folder
  (``$TERRATORCH_HSI_PEFT_CACHE``, else ``torch.hub.get_dir()/checkpoints``), written atomically.
- ``read_state_dict``: ``torch.load(weights_only=True)`` with only ``argparse.Namespace``
  allow-listed (the official training script stores its ``args`` that way); accepts the official
  layout (weights under ``model``) or a bare state dict.
- ``checkpoint_filter_fn`` (timm style): strips a ``module.`` prefix (DDP), drops the MAE decoder
  by name, resizes the position tables to the model, and refuses anything else that does not fit.
- ``load_checkpoint``: all of it, returning a :class:`LoadReport` stored as ``model.load_report``.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import torch

from terratorch_hsi_peft.backbones.pos_embed import (
    resize_spatial_pos_embed,
    resize_spectral_pos_embed,
)
from terratorch_hsi_peft.backbones.spectralgpt import SpectralGPTEncoder
from terratorch_hsi_peft.utils.download import download_url

__all__ = [
    "CACHE_ENV",
    "SPECTRALGPT_PLUS_URL",
    "CheckpointError",
    "LoadReport",
    "cache_dir",
    "checkpoint_filter_fn",
    "fetch_checkpoint",
    "load_checkpoint",
    "read_state_dict",
]

logger = logging.getLogger(__name__)

#: SpectralGPT+ (ViT-Base, continued pre-training on BigEarthNet at 128x128), Zenodo 8412455.
SPECTRALGPT_PLUS_URL = "https://zenodo.org/records/8412455/files/SpectralGPT+.pth?download=1"
#: Environment variable that overrides the folder downloaded checkpoints are cached in.
CACHE_ENV = "TERRATORCH_HSI_PEFT_CACHE"

_MAE_ONLY_PREFIXES = ("mask_token", "decoder_")
_LISTED = 8  # keys named in an error message before "... (N in all)"


class CheckpointError(ValueError):
    """A checkpoint cannot be read, or does not fit the model it is loaded into."""


@dataclass
class LoadReport:
    """What happened to each key when a checkpoint was loaded.

    Attributes:
        source: the file the weights came from.
        loaded: model keys filled from the checkpoint (resized ones included).
        resized: key -> (checkpoint shape, model shape) for tensors that were interpolated.
        dropped: checkpoint keys left out on purpose (the MAE decoder and ``mask_token``).
        missing: model keys the checkpoint does not provide (they keep their initialisation).
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    resized: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        resized = ", ".join(f"{k} {list(a)} -> {list(b)}" for k, (a, b) in self.resized.items())
        return (
            f"Checkpoint {self.source}: {len(self.loaded)} tensors loaded; "
            f"resized: {resized or 'none'}; dropped (MAE pre-training only): "
            f"{len(self.dropped)} ({_abbreviate(self.dropped)}); "
            f"missing (newly initialised): {self.missing or 'none'}."
        )


def cache_dir() -> Path:
    """Folder for downloaded checkpoints: ``$TERRATORCH_HSI_PEFT_CACHE`` or torch hub's."""
    override = os.environ.get(CACHE_ENV)
    return Path(override) if override else Path(torch.hub.get_dir()) / "checkpoints"


def fetch_checkpoint(path_or_url: str | os.PathLike) -> Path:
    """Return a local path for a checkpoint file or http(s) URL (downloaded once, atomically).

    Raises:
        FileNotFoundError: a local path that does not exist.
        terratorch_hsi_peft.utils.DownloadError: the download failed; nothing is left in the cache.
    """
    text = os.fspath(path_or_url)
    if text.startswith(("http://", "https://")):
        name = unquote(Path(urlsplit(text).path).name) or "checkpoint.pth"
        return download_url(text, cache_dir() / name)
    path = Path(text).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"Checkpoint {path} does not exist. Set ckpt_path (backbone_ckpt_path in YAML) to an "
            "existing file or an http(s) URL, or use pretrained: true for SpectralGPT+."
        )
    return path


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read the weights of a checkpoint file without unpickling arbitrary objects."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types for damaged or foreign files
        if "Unsupported global" in str(err):  # a well-formed file with objects not allowed
            hint = (
                "it holds Python objects other than tensors and an argparse.Namespace, which are "
                "not loaded for safety. Re-save its state dict (torch.save(model.state_dict()))."
            )
        else:
            hint = (
                "it is not a PyTorch checkpoint or is truncated/corrupt. Delete it and download "
                "it again, or point ckpt_path at a complete file."
            )
        raise CheckpointError(f"Cannot read checkpoint {path}: {hint} ({err})") from err
    weights = content.get("model", content) if isinstance(content, dict) else content
    if not isinstance(weights, dict) or not all(
        isinstance(value, torch.Tensor) for value in weights.values()
    ):
        raise CheckpointError(
            f"Checkpoint {path} holds no state dict: expected tensors by name, at the top level or "
            "under 'model' (the official SpectralGPT layout)."
        )
    return weights


def checkpoint_filter_fn(
    state_dict: dict[str, torch.Tensor],
    model: SpectralGPTEncoder,
    report: LoadReport | None = None,
) -> dict[str, torch.Tensor]:
    """Adapt a SpectralGPT state dict to ``model``; record each decision in ``report``.

    MAE-only keys (``mask_token``, ``decoder_*``) are dropped; ``pos_embed_spatial`` is resized
    bicubically to the model's grid and ``pos_embed_temporal`` linearly to its number of spectral
    groups. Every other tensor must match in shape.

    Raises:
        CheckpointError: a key the model does not have, a shape that cannot be adapted, or an
            encoder weight the checkpoint lacks.
    """
    report = report if report is not None else LoadReport(source="<state dict>")
    expected = model.state_dict()
    adapted: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        if key.startswith(_MAE_ONLY_PREFIXES):
            report.dropped.append(key)
        elif key not in expected:
            unknown.append(key)
        else:
            old, target = tuple(value.shape), tuple(expected[key].shape)
            if old != target:
                value = _adapt(key, value, model, target)
                report.resized[key] = (old, target)
            adapted[key] = value
            report.loaded.append(key)
    if unknown:
        raise CheckpointError(
            f"{report.source} has encoder weights this model does not have: "
            f"{_abbreviate(unknown)}. The architecture differs (depth "
            f"{model.depth}, embed_dim {model.embed_dim} here): set depth/embed_dim/num_heads "
            "to the checkpoint's or pick the matching spectralgpt_vit_* backbone."
        )
    report.missing = [key for key in expected if key not in adapted]
    required = [
        key
        for key in report.missing
        if not key.startswith(tuple(f"{p}." for p in model.trainable_with_adapters))
    ]
    if required:
        raise CheckpointError(
            f"{report.source} lacks encoder weights the model needs: {_abbreviate(required)}. "
            "It is not a SpectralGPT encoder checkpoint with separate spatial/spectral position "
            "tables; use the released pre-training checkpoint (SpectralGPT.pth / SpectralGPT+.pth)."
        )
    return adapted


def load_checkpoint(model: SpectralGPTEncoder, path_or_url: str | os.PathLike) -> LoadReport:
    """Load a SpectralGPT checkpoint (file or URL) into ``model``; log and return the report.

    The report is also stored as ``model.load_report``.
    """
    path = fetch_checkpoint(path_or_url)
    report = LoadReport(source=str(path))
    weights = checkpoint_filter_fn(read_state_dict(path), model, report)
    model.load_state_dict(weights, strict=False)  # strictness enforced by the filter above
    model.load_report = report
    logger.info("%s", report)
    return report


def _adapt(
    key: str, value: torch.Tensor, model: SpectralGPTEncoder, target: tuple[int, ...]
) -> torch.Tensor:
    old = tuple(value.shape)
    if key in ("pos_embed_spatial", "pos_embed_temporal") and (
        value.dim() != 3 or old[0] != 1 or old[2] != target[2]
    ):
        raise CheckpointError(
            f"{key} has shape {list(old)} in the checkpoint; the model needs [1, *, "
            f"{target[2]}]. Set embed_dim={old[-1]} (the checkpoint's width) or use another "
            "checkpoint."
        )
    if key == "pos_embed_spatial":
        side = math.isqrt(old[1])
        if side * side != old[1]:
            raise CheckpointError(
                f"pos_embed_spatial in the checkpoint has {old[1]} rows, not a square grid; it "
                "cannot be resized. Use a checkpoint trained on square images."
            )
        return resize_spatial_pos_embed(value, (side, side), (model.grid_size, model.grid_size))
    if key == "pos_embed_temporal":
        return resize_spectral_pos_embed(value, model.num_groups)
    hint = ""
    if key.startswith("patch_embed."):
        hint = (
            f" The tubelet differs: set patch_size, t_patch_size and embed_dim to the "
            f"checkpoint's (weight {list(old)} = [embed_dim, 1, t_patch_size, patch_size, "
            "patch_size])."
        )
    raise CheckpointError(
        f"{key} has shape {list(old)} in the checkpoint but {list(target)} in the model and "
        f"cannot be adapted.{hint or ' Set embed_dim/mlp_ratio to the checkpoint values.'}"
    )


def _abbreviate(keys: list[str]) -> str:
    shown = ", ".join(keys[:_LISTED])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > _LISTED else shown
