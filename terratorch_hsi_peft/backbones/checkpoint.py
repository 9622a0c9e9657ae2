"""Loading SpectralGPT checkpoints: fetch, read safely, adapt to the model, report.

- ``fetch_checkpoint``: a local file, or an http(s) URL downloaded once into the cache folder
  (``$TERRATORCH_HSI_PEFT_CACHE``, else ``torch.hub.get_dir()/checkpoints``) under
  ``<sha256 of the URL, 16 hex digits>/<file name>``, so two URLs never share a file. A download
  is read as a checkpoint before it gets its final name (an HTML error page or a truncated file
  served whole is refused, nothing is cached); a known sha256 is checked.
- ``read_state_dict``: ``torch.load(weights_only=True)`` with only ``argparse.Namespace``
  allow-listed (the official training script stores its ``args`` that way); accepts the official
  layout (weights under ``model``) or a bare state dict. A file holding other Python objects is
  refused as such, not as a damaged file.
- ``checkpoint_filter_fn`` (timm style): strips a ``module.`` prefix (DDP), drops the MAE decoder
  by name, resizes the position tables to the model, and refuses anything else that does not fit.
- ``read_checkpoint`` / ``record_load``: the fetch-and-read and the report-and-origin halves of
  ``load_checkpoint``, shared with the masked autoencoder's loader. Weights holding NaN or Inf
  (a diverged run) are refused, by name.
- ``load_checkpoint``: all of it, returning a :class:`LoadReport` stored as ``model.load_report``;
  the report is logged at WARNING (shown by the ``terratorch`` CLI) when a tensor was resized or
  left missing, at INFO otherwise. A cached download that no longer reads is removed.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import torch
from lightning.pytorch.utilities import rank_zero_info

from terratorch_hsi_peft.backbones.pos_embed import (
    resize_spatial_pos_embed,
    resize_spectral_pos_embed,
)
from terratorch_hsi_peft.backbones.spectralgpt import SpectralGPTEncoder
from terratorch_hsi_peft.utils.download import download_url, sha256sum
from terratorch_hsi_peft.utils.finite import check_finite

__all__ = [
    "CACHE_ENV",
    "SPECTRALGPT_PLUS_URL",
    "CheckpointError",
    "LoadReport",
    "cache_dir",
    "cached_path",
    "check_sha256_option",
    "checkpoint_filter_fn",
    "fetch_checkpoint",
    "load_checkpoint",
    "read_checkpoint",
    "read_state_dict",
    "record_load",
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
        url: the address it was downloaded from (None for a local file).
        sha256: the file's sha256.
        loaded: model keys filled from the checkpoint (resized ones included).
        resized: key -> (checkpoint shape, model shape) for tensors that were interpolated.
        dropped: checkpoint keys left out on purpose (the MAE decoder and ``mask_token``).
        missing: model keys the checkpoint does not provide (they keep their initialisation).
    """

    source: str
    url: str | None = None
    sha256: str | None = None
    loaded: list[str] = field(default_factory=list)
    resized: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        resized = ", ".join(f"{k} {list(a)} -> {list(b)}" for k, (a, b) in self.resized.items())
        origin = f" (from {self.url})" if self.url else ""
        digest = f", sha256 {self.sha256}" if self.sha256 else ""
        return (
            f"Checkpoint {self.source}{origin}{digest}: {len(self.loaded)} tensors loaded; "
            f"resized: {resized or 'none'}; dropped (MAE pre-training only): "
            f"{len(self.dropped)} ({_abbreviate(self.dropped)}); "
            f"missing (newly initialised): {self.missing or 'none'}."
        )


def cache_dir() -> Path:
    """Folder for downloaded checkpoints: ``$TERRATORCH_HSI_PEFT_CACHE`` or torch hub's."""
    override = os.environ.get(CACHE_ENV)
    return Path(override) if override else Path(torch.hub.get_dir()) / "checkpoints"


def cached_path(url: str) -> Path:
    """Where :func:`fetch_checkpoint` keeps the download of ``url``.

    ``<cache>/<first 16 hex digits of the URL's sha256>/<file name>``: every URL has its own
    folder (``.../v1/model.pth`` and ``.../v2/model.pth`` never share a file) and the file keeps
    its readable name.
    """
    name = unquote(Path(urlsplit(url).path).name) or "checkpoint.pth"
    return cache_dir() / hashlib.sha256(url.encode()).hexdigest()[:16] / name


def fetch_checkpoint(path_or_url: str | os.PathLike, sha256: str | None = None) -> Path:
    """Return a local path for a checkpoint file or http(s) URL (downloaded once, atomically).

    A download must read as a PyTorch checkpoint (:func:`read_state_dict`) before it is moved to
    its final name in the cache, so a server's error page or a truncated file is never cached.

    Args:
        path_or_url: a local file or an http(s) address.
        sha256: the file's expected hex sha256; when given it is checked for local files, for
            downloads, and for a file already in the cache (one that differs is fetched again).

    Raises:
        FileNotFoundError: a local path that does not exist.
        CheckpointError: a local file whose sha256 differs from ``sha256``.
        terratorch_hsi_peft.utils.DownloadError: the download failed, differs from ``sha256`` or
            is not a readable checkpoint; nothing is left in the cache.
    """
    text = os.fspath(path_or_url)
    if text.startswith(("http://", "https://")):
        return download_url(
            text,
            cached_path(text),
            sha256=sha256,
            validate=_check_download,
            sha256_option="backbone_ckpt_sha256 / ckpt_sha256",
        )
    path = Path(text).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"Checkpoint {path} does not exist. Set ckpt_path (backbone_ckpt_path in YAML) to an "
            "existing file or an http(s) URL, or use pretrained: true for SpectralGPT+."
        )
    if sha256 is not None and (actual := sha256sum(path)) != sha256.lower():
        raise CheckpointError(
            f"Checkpoint {path} has sha256 {actual}, not the expected {sha256}: it is another "
            "file than the one named. Point ckpt_path at the right file or correct ckpt_sha256."
        )
    return path


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read the weights of a checkpoint file without unpickling arbitrary objects.

    Raises:
        CheckpointError: the file holds Python objects or code that ``weights_only`` loading
            refuses (said as such), is not a PyTorch checkpoint or is truncated, or holds no
            state dict.
    """
    try:
        return _weights(path)
    except _Unreadable as err:
        raise CheckpointError(f"Cannot read checkpoint {path}: {err.reason}. {err.fix}") from None


class _Unreadable(Exception):
    def __init__(self, reason: str, fix: str) -> None:
        super().__init__(reason)
        self.reason, self.fix = reason, fix


def _weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types for damaged or foreign files
        raise _read_failure(path, err) from None
    weights = content.get("model", content) if isinstance(content, dict) else content
    if not isinstance(weights, dict) or not all(
        isinstance(value, torch.Tensor) for value in weights.values()
    ):
        raise _Unreadable(
            "it holds no state dict: expected tensors by name, at the top level or under 'model' "
            "(the official SpectralGPT layout)",
            "Point ckpt_path at a SpectralGPT checkpoint.",
        )
    return weights


def _check_download(path: Path) -> None:
    """``download_url``'s ``validate``: the download must read as a checkpoint."""
    try:
        _weights(path)
    except _Unreadable as err:
        raise ValueError(f"{err.reason}.") from None


def _read_failure(path: str | os.PathLike, err: Exception) -> _Unreadable:
    """Why ``torch.load(weights_only=True)`` refused ``path``, without torch's advice to switch
    ``weights_only`` off (which would run whatever code the file holds)."""
    text = str(err)
    if isinstance(err, pickle.UnpicklingError) and re.search(
        r"unsupported global|safe_globals", text, re.IGNORECASE
    ):
        names = sorted(set(re.findall(r"GLOBAL ([\w.]+)", text)))
        return _Unreadable(
            f"it holds Python objects/code ({', '.join(names) or 'not only tensors'}) and will "
            "not be loaded for safety",
            "Re-save only its weights, where the model was trained or with code you trust: "
            "torch.save(model.state_dict(), 'weights.pth'). (SpectralGPT's own checkpoints, "
            "weights under 'model' and training args as an argparse.Namespace, load as they are.)",
        )
    with open(path, "rb") as f:
        head = f.read(64)
    if head and all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        detail = f"it starts with {head.decode('ascii')!r}: text, such as a server's error page"
    elif isinstance(err, EOFError) or head.startswith(b"PK\x03\x04") or "zip archive" in text:
        detail = "it ends early or is damaged"  # torch's files are zip archives
    else:  # torch's own words, less its advice to load with weights_only=False
        found = re.search(r"WeightsUnpickler error:\s*(\S.*)", text)
        detail = found.group(1) if found else (text.splitlines() or [type(err).__name__])[0]
    return _Unreadable(
        f"it is not a PyTorch checkpoint or is truncated/corrupt ({os.path.getsize(path)} "
        f"bytes; {detail})",
        "Delete it and download it again, or point ckpt_path at a complete file.",
    )


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


def read_checkpoint(
    path_or_url: str | os.PathLike, sha256: str | None = None
) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Fetch and read a checkpoint (file or URL): its weights and a report naming its source.

    The one reading path of the backbone (:func:`load_checkpoint`) and the masked autoencoder
    (``load_mae_checkpoint``). The report names the file, the URL it was downloaded from and its
    sha256; nothing is loaded or listed yet.

    Args:
        path_or_url: a local file or an http(s) address (see :func:`fetch_checkpoint`).
        sha256: the file's expected hex sha256, checked when given.

    Raises:
        CheckpointError: the file cannot be read, or a weight holds NaN or Inf (named). A cached
            download that cannot be read any more is removed first (the message says so), so the
            next run downloads it again.
    """
    text = os.fspath(path_or_url)
    url = text if text.startswith(("http://", "https://")) else None
    path = fetch_checkpoint(text, sha256=sha256)
    try:
        state_dict = _weights(path)
    except _Unreadable as err:
        fix = err.fix
        if url is not None:  # validated when downloaded: damaged since, so fetch it again
            path.unlink(missing_ok=True)
            fix = f"It is the cached download of {url} and was removed; run again to fetch it."
        raise CheckpointError(f"Cannot read checkpoint {path}: {err.reason}. {fix}") from None
    check_finite(
        state_dict,
        f"Checkpoint {path}",
        "the training that wrote it diverged, and a model built from it would output only NaN. "
        "Nothing was loaded; point ckpt_path (backbone_ckpt_path in YAML) at the checkpoint of "
        "an earlier epoch (export_encoder_from_checkpoint for a pre-training run), or train "
        "again with a lower learning rate.",
        CheckpointError,
    )
    digest = sha256.lower() if sha256 is not None else sha256sum(path)  # checked when given
    return state_dict, LoadReport(source=str(path), url=url, sha256=digest)


def record_load(encoder: SpectralGPTEncoder, report: LoadReport) -> None:
    """Store ``report`` as ``encoder.load_report``, name its origin, and log it.

    ``encoder.weights_origin`` becomes the file (its URL if downloaded) and sha256, which adapter
    files trained on the encoder record. The report is logged at WARNING (shown by the
    ``terratorch`` CLI) when a tensor was resized or left at its initialisation, else as one
    line on Lightning's console logger (rank zero; the plugin's INFO records are not shown).
    """
    encoder.load_report = report
    encoder.weights_origin = f"checkpoint {report.url or report.source} (sha256 {report.sha256})"
    if report.resized or report.missing:
        logger.warning("%s", report)
    else:
        rank_zero_info(str(report))


def load_checkpoint(
    model: SpectralGPTEncoder, path_or_url: str | os.PathLike, sha256: str | None = None
) -> LoadReport:
    """Load a SpectralGPT checkpoint (file or URL) into ``model``; log and return the report.

    The report is also stored as ``model.load_report``, and ``model.weights_origin`` names the
    file and its sha256 (recorded in adapter files trained on this model). The report is logged
    at WARNING when a tensor was resized or left at its initialisation, else shown as one console
    line (see :func:`record_load`).

    Args:
        model: the encoder to fill.
        path_or_url: a local file or an http(s) address (see :func:`fetch_checkpoint`).
        sha256: the file's expected hex sha256, checked when given.

    Raises:
        CheckpointError: the file cannot be read, holds NaN or Inf, or does not fit ``model``.
            A cached download that cannot be read any more is removed first, so the next run
            downloads it again.
    """
    state_dict, report = read_checkpoint(path_or_url, sha256=sha256)
    weights = checkpoint_filter_fn(state_dict, model, report)
    model.load_state_dict(weights, strict=False)  # strictness enforced by the filter above
    record_load(model, report)
    return report


def check_sha256_option(name: str, ckpt_path: object, ckpt_sha256: object) -> None:
    """Refuse a ``ckpt_sha256`` factory option without a checkpoint or that is no hex digest.

    Args:
        name: the factory, named in the message.
        ckpt_path: the checkpoint that will be loaded (None: none).
        ckpt_sha256: the option's value (None: not given).

    Raises:
        ValueError: the digest is given without a checkpoint, or is not 64 hex digits.
    """
    if ckpt_sha256 is None:
        return
    if ckpt_path is None:
        raise ValueError(
            f"{name}: ckpt_sha256 is set but no checkpoint is loaded; set ckpt_path (or "
            "pretrained: true), or drop ckpt_sha256."
        )
    if not isinstance(ckpt_sha256, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", ckpt_sha256):
        raise ValueError(
            f"{name}: ckpt_sha256 must be 64 hex digits (quote it in YAML), got {ckpt_sha256!r}."
        )


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
