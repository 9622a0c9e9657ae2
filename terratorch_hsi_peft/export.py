"""Merged export: a PEFT run's checkpoint as one that stock TerraTorch loads without the plugin.

The adapters are folded into the encoder weights, each adapted layer becomes the plain
``nn.Linear`` it wraps, q/k/v Linears split by ``replace_qkv`` are fused back into the backbone's
own ``qkv`` Linear, and the task's hyperparameters say ``model_factory: EncoderDecoderFactory``
without ``peft_config``. The result has the state-dict keys of the stock model and predicts what
the adapted model predicts (up to float rounding). Optimizer and scheduler states are dropped: the
file is for inference (or for full fine-tuning from it).

Command line::

    python -m terratorch_hsi_peft.export RUN.ckpt MERGED.ckpt

then ``terratorch predict --ckpt_path MERGED.ckpt`` with the run's config and
``model_factory: EncoderDecoderFactory`` without ``peft_config``, or
``SemanticSegmentationTask.load_from_checkpoint("MERGED.ckpt")`` in plain TerraTorch. With a
backbone of this plugin (``spectralgpt_vit_*``) the plugin still provides the backbone; with
TerraTorch's own backbones (Prithvi) it is not needed at all.
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

from terratorch_hsi_peft.models.peft_model import SPEC_ATTR, TRAINABLE_ATTR, has_adapters
from terratorch_hsi_peft.peft.base import AdapterLinear
from terratorch_hsi_peft.peft.inject import merge_adapters
from terratorch_hsi_peft.peft.qkv import QKVSplit
from terratorch_hsi_peft.terratorch_compat import restore_freeze_encoder
from terratorch_hsi_peft.utils.download import atomic_write

__all__ = ["export_merged_checkpoint", "merge_into_stock_model"]

#: Checkpoint entries that belong to training with adapters, not to the merged model.
_DROPPED = ("optimizer_states", "lr_schedulers", "callbacks")


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
        model.__dict__.pop(attr, None)  # instance attributes set by attach_adapters
    restore_freeze_encoder(model)
    return model


def export_merged_checkpoint(checkpoint: str | os.PathLike, output: str | os.PathLike) -> Path:
    """Write the merged, plugin-free version of a PEFT run's Lightning checkpoint.

    Args:
        checkpoint: a ``.ckpt`` of a TerraTorch task trained with ``PEFTEncoderDecoderFactory``.
        output: the checkpoint to write (atomically).

    Returns:
        ``output`` as a Path.

    Raises:
        ValueError: the checkpoint is not one of a PEFT run of a TerraTorch task.
    """
    source = torch.load(checkpoint, map_location="cpu", weights_only=True)
    hparams = source.get("hyper_parameters", {})
    model_args = hparams.get("model_args") or {}
    if hparams.get("model_factory") != "PEFTEncoderDecoderFactory" or not model_args.get(
        "peft_config"
    ):
        raise ValueError(
            f"{checkpoint} is not a checkpoint of a PEFT run: its task has model_factory "
            f"{hparams.get('model_factory')!r} and peft_config {model_args.get('peft_config')!r}. "
            "Give the .ckpt of a run with model_factory: PEFTEncoderDecoderFactory and a "
            "peft_config."
        )
    task_class = _task_class(hparams, checkpoint)
    task = task_class.load_from_checkpoint(checkpoint, map_location="cpu")
    merge_into_stock_model(task.model)

    merged = {k: v for k, v in source.items() if k not in _DROPPED}
    merged["state_dict"] = task.state_dict()
    merged["hyper_parameters"] = _stock_hparams(hparams)
    buffer = io.BytesIO()
    torch.save(merged, buffer)
    output = Path(output)
    with atomic_write(output) as f:
        f.write(buffer.getvalue())
    return output


def _stock_hparams(hparams: dict[str, Any]) -> dict[str, Any]:
    stock = copy.deepcopy(hparams)
    stock["model_factory"] = "EncoderDecoderFactory"
    stock["model_args"].pop("peft_config")
    return stock


def _task_class(hparams: dict[str, Any], checkpoint: str | os.PathLike) -> type:
    path = hparams.get("_class_path")
    if not path:
        raise ValueError(
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
    parser.add_argument("output", help="merged .ckpt to write")
    args = parser.parse_args(argv)
    written = export_merged_checkpoint(args.checkpoint, args.output)
    print(f"Merged checkpoint written to {written}: model_factory EncoderDecoderFactory, no peft.")


if __name__ == "__main__":
    main()
