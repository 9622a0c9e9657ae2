"""Merged export: a PEFT run's checkpoint as one that stock TerraTorch loads without the plugin.

The adapters are folded into the encoder weights, each adapted layer becomes the plain
``nn.Linear`` it wraps, q/k/v Linears split by ``replace_qkv`` are fused back into the backbone's
own ``qkv`` Linear, and the task's hyperparameters say ``model_factory: EncoderDecoderFactory``
without ``peft_config``. The result has the state-dict keys of the stock model and predicts what
the adapted model predicts (up to float rounding). Optimizer and scheduler states are dropped: the
file is for inference (or for full fine-tuning from it).

Command line::

    python -m terratorch_hsi_peft.export RUN.ckpt MERGED.ckpt [--overwrite]

then ``terratorch predict --ckpt_path MERGED.ckpt`` with the run's config and
``model_factory: EncoderDecoderFactory`` without ``peft_config``, or
``SemanticSegmentationTask.load_from_checkpoint("MERGED.ckpt")`` in plain TerraTorch. With a
backbone of this plugin (``spectralgpt_vit_*``) the plugin still provides the backbone; with
TerraTorch's own backbones (Prithvi) it is not needed at all.

The run's checkpoint is never written to: the output must be another file, an existing output is
replaced only with ``--overwrite``, and the output appears whole or not at all. A run with a
spectral path (``model_args.spectral_path``, as in ``configs/indian_pines/segmentation.yaml``
and the quickstart) is refused: the path is a module of this plugin that
``EncoderDecoderFactory`` cannot build.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import io
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from terratorch_hsi_peft.adapters.base import AdapterLinear
from terratorch_hsi_peft.adapters.inject import merge_adapters
from terratorch_hsi_peft.adapters.qkv import QKVSplit

# The backbone loader's diagnosis of a file torch.load refuses (pickled objects, truncation).
from terratorch_hsi_peft.backbones.checkpoint import _read_failure
from terratorch_hsi_peft.models.peft_model import SPEC_ATTR, TRAINABLE_ATTR, has_adapters
from terratorch_hsi_peft.terratorch_compat import restore_freeze_encoder
from terratorch_hsi_peft.utils.download import atomic_write

__all__ = ["ExportError", "export_merged_checkpoint", "merge_into_stock_model"]

#: Checkpoint entries that belong to training with adapters, not to the merged model.
_DROPPED = ("optimizer_states", "lr_schedulers", "callbacks")


class ExportError(ValueError):
    """The checkpoint cannot be exported, or the output cannot be written; nothing was written."""


def merge_into_stock_model(model: nn.Module) -> nn.Module:
    """Turn a model built by ``PEFTEncoderDecoderFactory`` into the stock model, in place.

    Folds every adapter into its base weight, replaces each adapted layer by its base
    ``nn.Linear`` and fuses every split q/k/v back into one Linear under the original name.

    Returns:
        ``model``, now without adapters: ``state_dict()`` has the keys
        ``EncoderDecoderFactory`` builds.

    Raises:
        ValueError: ``model`` has no plugin adapters (not built with a peft_config, or with
            ``backend: hf``).
    """
    if not has_adapters(model) or getattr(model, SPEC_ATTR)["backend"] != "plugin":
        raise ValueError(
            "merge_into_stock_model needs a model built by PEFTEncoderDecoderFactory with the "
            "plugin's adapters; Hugging Face adapters (backend: hf) merge with "
            "model.encoder.merge_and_unload()."
        )
    encoder = model.encoder
    merge_adapters(encoder)
    for name, module in list(encoder.named_modules()):
        if isinstance(module, AdapterLinear):
            _replace(encoder, name, module.base_layer)
    for name, module in list(encoder.named_modules()):
        if isinstance(module, QKVSplit):
            _replace(encoder, name, _fused(module))
    for p in encoder.parameters():
        p.requires_grad_(True)  # the stock model trains everything unless frozen by its task
    for attr in (TRAINABLE_ATTR, SPEC_ATTR):
        model.__dict__.pop(attr, None)  # instance attributes set by apply_peft_to_model
    restore_freeze_encoder(model)
    return model


def export_merged_checkpoint(
    checkpoint: str | os.PathLike, output: str | os.PathLike, overwrite: bool = False
) -> Path:
    """Write the merged, plugin-free version of a PEFT run's Lightning checkpoint.

    Args:
        checkpoint: a ``.ckpt`` of a TerraTorch task trained with ``PEFTEncoderDecoderFactory``;
            never written to.
        output: the checkpoint to write (atomically: a temporary file in its folder, moved into
            place once complete); not ``checkpoint`` itself, under any spelling or link.
        overwrite: replace ``output`` when it exists (otherwise refused).

    Returns:
        ``output`` as a Path.

    Raises:
        ExportError: the checkpoint is missing, unreadable, not one of a PEFT run of a
            TerraTorch task, or of a run with a spectral path; the output is the checkpoint, a
            folder, an existing file without ``overwrite``, or cannot be written. Nothing is
            written then.
    """
    checkpoint, output = Path(checkpoint), Path(output)
    _check_paths(checkpoint, output, overwrite)
    source = _read_checkpoint(checkpoint)
    hparams = source.get("hyper_parameters") or {}
    model_args = hparams.get("model_args") or {}
    if hparams.get("model_factory") != "PEFTEncoderDecoderFactory" or not model_args.get(
        "peft_config"
    ):
        raise ExportError(
            f"{checkpoint} is not a checkpoint of a PEFT run: its task has model_factory "
            f"{hparams.get('model_factory')!r} and peft_config {model_args.get('peft_config')!r}. "
            "Give the .ckpt of a run with model_factory: PEFTEncoderDecoderFactory and a "
            "peft_config."
        )
    _check_no_spectral_path(model_args, checkpoint)
    task_class = _task_class(hparams, checkpoint)
    task = task_class.load_from_checkpoint(checkpoint, map_location="cpu")
    merge_into_stock_model(task.model)

    merged = {k: v for k, v in source.items() if k not in _DROPPED}
    merged["state_dict"] = task.state_dict()
    merged["hyper_parameters"] = _stock_hparams(hparams)
    buffer = io.BytesIO()
    torch.save(merged, buffer)

    def still_free(_: Path) -> None:  # the output may have appeared while the run was merged
        if not overwrite and output.exists():
            raise ExportError(_exists_message(output))

    try:
        with atomic_write(output, check=still_free) as f:
            f.write(buffer.getvalue())
    except OSError as err:
        raise ExportError(
            f"Cannot write {output}: {err.strerror or err}. Nothing was written; give an output "
            "in a folder you can write to (with room for the checkpoint)."
        ) from None
    return output


def _check_paths(checkpoint: Path, output: Path, overwrite: bool) -> None:
    """Refuse, before any work, an input that is not a file and an output that would replace
    the input, a folder or (without ``overwrite``) an existing file."""
    if not checkpoint.exists():
        raise ExportError(
            f"{checkpoint} does not exist. Give the path of the run's .ckpt (under the run's "
            "checkpoints/ folder)."
        )
    if checkpoint.is_dir():
        raise ExportError(
            f"{checkpoint} is a folder. Give the path of the run's .ckpt file, not its folder."
        )
    if output.is_dir():
        raise ExportError(
            f"The output {output} is a folder. Give the merged checkpoint's file name, for "
            f"example {output / 'merged.ckpt'}."
        )
    # samefile: the same file under another spelling, through a symbolic or a hard link.
    if output.exists() and os.path.samefile(checkpoint, output):
        raise ExportError(
            f"The output {output} is the run's checkpoint {checkpoint}: writing it would "
            "replace the run (its adapters and optimizer state). Give another output file."
        )
    if (output.exists() or output.is_symlink()) and not overwrite:
        raise ExportError(_exists_message(output))


def _exists_message(output: Path) -> str:
    return (
        f"The output {output} exists. Pass --overwrite (overwrite=True in Python) to replace it, "
        "or give another output file."
    )


def _read_checkpoint(checkpoint: Path) -> dict[str, Any]:
    """The checkpoint's content, read with ``weights_only=True``; a clear error otherwise."""
    fix = (
        "Give the .ckpt that `terratorch fit` wrote for the run (copy it again if it was cut "
        "short)."
    )
    if checkpoint.stat().st_size == 0:
        raise ExportError(f"Cannot read checkpoint {checkpoint}: the file is empty. {fix}")
    try:
        source = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except OSError as err:  # the file itself cannot be opened or read (permissions, I/O)
        raise ExportError(
            f"Cannot read checkpoint {checkpoint}: {err.strerror or err}. Give a .ckpt you can "
            "read."
        ) from None
    except Exception as err:  # torch.load raises many types for damaged or foreign files
        raise ExportError(
            f"Cannot read checkpoint {checkpoint}: {_read_failure(checkpoint, err).reason}. {fix}"
        ) from None
    if not isinstance(source, dict):
        raise ExportError(
            f"{checkpoint} holds a {type(source).__name__}, not a Lightning checkpoint (a dict "
            f"with state_dict and hyper_parameters). {fix}"
        )
    return source


def _check_no_spectral_path(model_args: dict[str, Any], checkpoint: Path) -> None:
    """Refuse a run with a spectral path: the merged model would need the plugin's factory."""
    if model_args.get("spectral_path") is None:
        return
    raise ExportError(
        f"{checkpoint} is a run with a spectral path (model_args.spectral_path: "
        f"{model_args['spectral_path']}). The path is a module "
        "of this plugin that stock TerraTorch's EncoderDecoderFactory cannot build, so a merged "
        "checkpoint would not load without the plugin. Predict from the run's checkpoint with "
        "the plugin instead (terratorch predict --config <the run's config> --ckpt_path "
        f"{checkpoint}), adding the callback terratorch_hsi_peft.callbacks."
        "MergeAdaptersForPredict to predict with the adapters merged; or train without "
        "spectral_path to export a plugin-free checkpoint."
    )


def _stock_hparams(hparams: dict[str, Any]) -> dict[str, Any]:
    stock = copy.deepcopy(hparams)
    stock["model_factory"] = "EncoderDecoderFactory"
    stock["model_args"].pop("peft_config")
    # An unset spectral path (spectral_path: null) builds nothing; EncoderDecoderFactory would
    # fail on the key.
    stock["model_args"].pop("spectral_path", None)
    return stock


def _task_class(hparams: dict[str, Any], checkpoint: str | os.PathLike) -> type:
    path = hparams.get("_class_path")
    if not path:
        raise ExportError(
            f"{checkpoint} does not name its task class (hyper_parameters['_class_path'], written "
            "by the terratorch command); export from a checkpoint of a terratorch fit run."
        )
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _fused(split: QKVSplit) -> nn.Linear:
    parts = (split.q_linear, split.k_linear, split.v_linear)
    weight = parts[0].weight
    fused = nn.Linear(
        split.in_features,
        split.out_features,
        bias=parts[0].bias is not None,
        device=weight.device,
        dtype=weight.dtype,
    )
    with torch.no_grad():
        fused.weight.copy_(torch.cat([p.weight for p in parts]))
        if fused.bias is not None:
            fused.bias.copy_(torch.cat([p.bias for p in parts]))
    return fused


def _replace(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)


def main(argv: list[str] | None = None) -> None:
    """``python -m terratorch_hsi_peft.export RUN.ckpt MERGED.ckpt``."""
    parser = argparse.ArgumentParser(
        prog="python -m terratorch_hsi_peft.export",
        description="Merge a PEFT run's adapters into its TerraTorch backbone and write a "
        "checkpoint that stock TerraTorch (EncoderDecoderFactory) loads without the plugin.",
    )
    parser.add_argument("checkpoint", help=".ckpt of a run with PEFTEncoderDecoderFactory")
    parser.add_argument("output", help="merged .ckpt to write (not the run's checkpoint)")
    parser.add_argument("--overwrite", action="store_true", help="replace the output if it exists")
    args = parser.parse_args(argv)
    try:
        written = export_merged_checkpoint(args.checkpoint, args.output, args.overwrite)
    except ExportError as err:
        parser.exit(1, f"{parser.prog}: error: {err}\n")
    print(f"Merged checkpoint written to {written}: model_factory EncoderDecoderFactory, no peft.")


if __name__ == "__main__":
    main()
