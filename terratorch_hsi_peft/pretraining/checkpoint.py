"""Checkpoints of the masked autoencoder, both ways.

- :func:`load_mae_checkpoint`: an official *pre-training* checkpoint (``SpectralGPT+.pth``, or a
  ``checkpoint-N.pth`` of the official ``main_pretrain.py``: weights under ``model`` next to
  ``optimizer``, ``epoch``, ``scaler`` and an ``argparse.Namespace`` under ``args``) into
  :class:`SpectralGPTMAE`, encoder and decoder, read with ``torch.load(weights_only=True)``.
- :func:`export_encoder`: the encoder alone, in the official layout (``{"model": weights}``),
  which ``spectralgpt_vit_*`` loads through ``backbone_ckpt_path`` with nothing missing;
  :func:`export_encoder_from_checkpoint` does the same from a Lightning checkpoint of a run.

Both ways refuse weights that hold NaN or Inf (a diverged run), naming them: nothing is loaded,
nothing is written.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch

from terratorch_hsi_peft.backbones.checkpoint import (
    CheckpointError,
    LoadReport,
    _abbreviate,
    _read_failure,
    checkpoint_filter_fn,
    read_checkpoint,
    record_load,
)
from terratorch_hsi_peft.backbones.pos_embed import (
    resize_spatial_pos_embed,
    resize_spectral_pos_embed,
)
from terratorch_hsi_peft.backbones.spectralgpt import SpectralGPTEncoder
from terratorch_hsi_peft.pretraining.mae import DECODER_PREFIXES, SpectralGPTMAE
from terratorch_hsi_peft.utils.cli_values import task_model_args
from terratorch_hsi_peft.utils.download import atomic_write
from terratorch_hsi_peft.utils.finite import check_finite

__all__ = [
    "encoder_state_dict",
    "export_encoder",
    "export_encoder_from_checkpoint",
    "load_mae_checkpoint",
]

logger = logging.getLogger(__name__)

_DEFAULT_NUM_BANDS = inspect.signature(SpectralGPTMAE).parameters["num_bands"].default

#: Architecture attributes of the encoder written into an export's ``args``.
_ENCODER_ARGS = (
    "num_bands",
    "img_size",
    "patch_size",
    "t_patch_size",
    "embed_dim",
    "depth",
    "num_groups",
)


def load_mae_checkpoint(
    model: SpectralGPTMAE, path_or_url: str | os.PathLike, sha256: str | None = None
) -> LoadReport:
    """Load a SpectralGPT pre-training checkpoint (file or URL) into ``model``; return the report.

    The file is fetched and read as the backbone's are (:func:`read_checkpoint`: URL-keyed cache,
    ``sha256`` check, a damaged cached download removed). Encoder keys go through the backbone's
    own filter (position tables resized to the model's grid and spectral groups, every other
    shape must match, every encoder weight required); the decoder's position tables are resized
    the same way. Decoder keys the checkpoint lacks keep their initialisation and are listed in
    ``report.missing`` (an encoder-only file, such as an :func:`export_encoder` output, starts a
    fresh decoder). The report names the file, URL and sha256 and is stored as
    ``model.load_report`` and ``model.encoder.load_report``; ``model.encoder.weights_origin``
    names the checkpoint; it is logged as the backbone's is (WARNING when a tensor was resized or
    is missing).

    Args:
        model: the masked autoencoder to fill.
        path_or_url: a local file or an http(s) address.
        sha256: the file's expected hex sha256, checked when given.

    Raises:
        CheckpointError: an unreadable file, a weight holding NaN or Inf, a key the model does
            not have, or a shape that cannot be adapted (the message names the setting to
            change); the model is left unchanged.
    """
    state_dict, report = read_checkpoint(path_or_url, sha256=sha256)
    path = report.source
    weights = {key.removeprefix("module."): value for key, value in state_dict.items()}
    encoder_part = {k: v for k, v in weights.items() if not k.startswith(DECODER_PREFIXES)}
    decoder_part = {k: v for k, v in weights.items() if k.startswith(DECODER_PREFIXES)}
    encoder_weights = checkpoint_filter_fn(encoder_part, model.encoder, report)
    expected = {k: v for k, v in model.state_dict().items() if k.startswith(DECODER_PREFIXES)}
    unknown = sorted(set(decoder_part) - set(expected))
    if unknown:
        raise CheckpointError(
            f"{path} has decoder weights this model does not have: {_abbreviate(unknown)}. Set "
            f"decoder_depth to the checkpoint's ({_decoder_depth(decoder_part)} blocks) or use "
            "another checkpoint."
        )
    decoder_weights = {}
    for key, value in decoder_part.items():
        target = tuple(expected[key].shape)
        if tuple(value.shape) != target:
            value = _adapt_decoder(key, value, model, target, path)
            report.resized[key] = (tuple(decoder_part[key].shape), target)
        decoder_weights[key] = value
        report.loaded.append(key)
    missing_decoder = [key for key in expected if key not in decoder_weights]
    report.missing += missing_decoder  # after the encoder's own
    model.encoder.load_state_dict(encoder_weights, strict=False)  # strictness checked above
    model.load_state_dict(decoder_weights, strict=False)
    if missing_decoder:
        logger.warning(
            "%s holds no MAE decoder (%d keys missing): the decoder starts from scratch.",
            path,
            len(missing_decoder),
        )
    record_load(model.encoder, report)
    model.load_report = report
    return report


def encoder_state_dict(encoder: SpectralGPTEncoder) -> dict[str, torch.Tensor]:
    """The encoder's weights under the official names, detached copies on the CPU.

    Group-fusion layers (``fusion_layers``) belong to downstream models, not to SpectralGPT, and
    are left out.
    """
    return {
        key: value.detach().cpu().clone()
        for key, value in encoder.state_dict().items()
        if not key.startswith("fusion_layers.")
    }


def export_encoder(
    model: SpectralGPTMAE | SpectralGPTEncoder,
    path: str | os.PathLike,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the encoder in the official checkpoint layout, atomically.

    The file holds ``{"model": weights, "args": architecture}`` (plus ``extra``, which must be
    plain tensors, numbers, strings, lists and dicts so the file stays loadable with
    ``weights_only=True``). Load it with ``backbone_ckpt_path: <path>`` and the same
    ``embed_dim``/``depth``/``num_heads``/``patch_size``/``t_patch_size``.

    Returns:
        The path written.

    Raises:
        ValueError: a weight holds NaN or Inf (named; the pre-training diverged); nothing is
            written and a file already at ``path`` is left as it was.
    """
    encoder = model.encoder if isinstance(model, SpectralGPTMAE) else model
    args = {name: getattr(encoder, name) for name in _ENCODER_ARGS}
    return _write(path, encoder_state_dict(encoder), args, extra, "The encoder to export")


def export_encoder_from_checkpoint(
    checkpoint: str | os.PathLike, path: str | os.PathLike | None = None
) -> Path:
    """Export the encoder of a pre-training run's Lightning checkpoint (any saved epoch).

    The same file :class:`~terratorch_hsi_peft.callbacks.EncoderExport` writes at the end of
    ``fit``, taken from ``checkpoint`` (read with ``weights_only=True``): the weights under
    ``model.encoder.*`` and the pre-training datamodule's band routes. ``path`` defaults to the
    checkpoint's name with the suffix ``.encoder.pth`` (``last.ckpt`` -> ``last.encoder.pth``).

    Raises:
        CheckpointError: the file cannot be read safely or holds no SpectralGPT MAE encoder.
        ValueError: an encoder weight holds NaN or Inf (named); nothing is written.
    """
    checkpoint = Path(checkpoint)
    try:
        content = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types for damaged or foreign files
        # said as the backbone says it, without torch's advice to switch weights_only off
        reason = _read_failure(checkpoint, err).reason
        raise CheckpointError(
            f"Cannot read {checkpoint}: {reason}. Export from the run itself instead: add the "
            "EncoderExport callback and resume with --ckpt_path."
        ) from None
    state = content.get("state_dict", {}) if isinstance(content, dict) else {}
    prefix = "model.encoder."
    weights = {
        key.removeprefix(prefix): value
        for key, value in state.items()
        if key.startswith(prefix) and not key.startswith(f"{prefix}fusion_layers.")
    }
    if "patch_embed.proj.weight" not in weights:
        raise CheckpointError(
            f"{checkpoint} holds no SpectralGPT masked-autoencoder encoder (no "
            f"'{prefix}patch_embed.proj.weight'); give the checkpoint of a ReconstructionTask "
            "run of spectralgpt_mae_vit_*."
        )
    kernel = weights["patch_embed.proj.weight"]
    model_args = task_model_args(content.get("hyper_parameters"))
    args = {
        # as the run built the model: its default when unset
        "num_bands": model_args.get("num_bands", _DEFAULT_NUM_BANDS),
        "img_size": math.isqrt(weights["pos_embed_spatial"].shape[1]) * kernel.shape[3],
        "patch_size": kernel.shape[3],
        "t_patch_size": kernel.shape[2],
        "embed_dim": kernel.shape[0],
        "depth": len({key.split(".")[1] for key in weights if key.startswith("blocks.")}),
        "num_groups": weights["pos_embed_temporal"].shape[1],
    }
    routes = next((v for v in content.values() if isinstance(v, dict) and "band_routes" in v), {})
    extra = {key: routes[key] for key in ("scenes", "band_routes") if key in routes}
    target = Path(path) if path is not None else checkpoint.with_suffix(".encoder.pth")
    return _write(target, weights, args, extra, f"The encoder in {checkpoint}")


def _write(
    path: str | os.PathLike,
    weights: dict[str, torch.Tensor],
    args: dict[str, Any],
    extra: dict[str, Any] | None,
    source: str,
) -> Path:
    path = Path(path)
    # Checked before anything is written: a file already at ``path`` stays as it was.
    check_finite(
        weights,
        source,
        "the pre-training diverged (its loss went NaN), and a backbone loaded from it would "
        f"output only NaN. {path} was not written; export the checkpoint of an earlier epoch "
        "(export_encoder_from_checkpoint), or pre-train again with a lower learning rate.",
    )
    with atomic_write(path) as f:
        torch.save({"model": weights, "args": args, **(extra or {})}, f)
    return path


def _adapt_decoder(
    key: str, value: torch.Tensor, model: SpectralGPTMAE, target: tuple[int, ...], source: str
) -> torch.Tensor:
    old = tuple(value.shape)
    if key in ("decoder_pos_embed_spatial", "decoder_pos_embed_temporal") and (
        value.dim() == 3 and old[0] == 1 and old[2] == target[2]
    ):
        if key == "decoder_pos_embed_temporal":
            return resize_spectral_pos_embed(value, model.encoder.num_groups)
        side = math.isqrt(old[1])
        if side * side == old[1]:
            grid = (model.encoder.grid_size, model.encoder.grid_size)
            return resize_spatial_pos_embed(value, (side, side), grid)
    hint = (
        "set decoder_embed_dim to the checkpoint's"
        if key != "decoder_pred.weight" and key != "decoder_pred.bias"
        else "set patch_size and t_patch_size to the checkpoint's (decoder_pred has "
        "t_patch_size * patch_size**2 outputs)"
    )
    raise CheckpointError(
        f"{source}: {key} has shape {list(old)} in the checkpoint but {list(target)} in the "
        f"model and cannot be adapted; {hint}."
    )


def _decoder_depth(decoder_part: dict[str, torch.Tensor]) -> int:
    blocks = {k.split(".")[1] for k in decoder_part if k.startswith("decoder_blocks.")}
    return len(blocks)
