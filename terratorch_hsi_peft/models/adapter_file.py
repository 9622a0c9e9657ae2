"""The small artifact of a PEFT run: every tensor training changes, in one adapter file.

The file is :func:`terratorch_hsi_peft.adapters.save_adapters`'s format (safetensors plus metadata,
checked on loading) written for the whole TerraTorch model: the encoder's adapter factors, the
backbone's ``trainable_with_adapters`` tensors (e.g. SpectralGPT's learned group fusion) and the
full state of everything outside the encoder (necks, decoder, heads: parameters and buffers such
as BatchNorm statistics). With the pretrained backbone it reproduces the trained model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from terratorch_hsi_peft.adapters.inject import adapter_layers
from terratorch_hsi_peft.adapters.io import load_adapters, save_adapters
from terratorch_hsi_peft.models.peft_model import SPEC_ATTR, TRAINABLE_ATTR, has_adapters

__all__ = [
    "AdapterFileParts",
    "adapter_file_parts",
    "load_model_adapters",
    "save_model_adapters",
    "trained_tensor_names",
]


@dataclass(frozen=True)
class AdapterFileParts:
    """What an adapter file holds, in two parts: the encoder's (adapter factors and the backbone's
    ``trainable_with_adapters`` tensors) and the task's (necks, decoder, heads: every tensor,
    buffers included). Sizes are the tensors' bytes; the file adds a small JSON header."""

    adapter_tensors: int
    adapter_bytes: int
    task_tensors: int
    task_bytes: int

    def __str__(self) -> str:
        return (
            f"adapters {_size(self.adapter_bytes)} ({self.adapter_tensors:,} values) + necks, "
            f"decoder and heads {_size(self.task_bytes)} ({self.task_tensors:,} values)"
        )


def adapter_file_parts(model: nn.Module) -> AdapterFileParts:
    """Sizes of the two parts of the file :func:`save_model_adapters` writes for ``model``."""
    _require_plugin_adapters(model)
    state = model.state_dict()
    names = trained_tensor_names(model)
    extras = {n for n in names if n.startswith("encoder.")}
    task = [k for k in state if not k.startswith("encoder.")]
    encoder = [
        f"encoder.{layer_name}.{name}"
        for layer_name, layer in adapter_layers(model.encoder).items()
        for name in layer.adapter_parameters()
    ] + [k for k in state if any(k == e or k.startswith(e + ".") for e in extras)]
    encoder_tensors = [state[k] for k in dict.fromkeys(encoder) if k in state]
    task_tensors = [state[k] for k in task]
    return AdapterFileParts(
        adapter_tensors=sum(t.numel() for t in encoder_tensors),
        adapter_bytes=sum(t.numel() * t.element_size() for t in encoder_tensors),
        task_tensors=sum(t.numel() for t in task_tensors),
        task_bytes=sum(t.numel() * t.element_size() for t in task_tensors),
    )


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 1e3:,.1f} kB" if n_bytes < 1e6 else f"{n_bytes / 1e6:,.1f} MB"


def trained_tensor_names(model: nn.Module) -> list[str]:
    """``include`` entries of the file beyond the adapters: modules outside the encoder by their
    top-level name, and the encoder's other trainable tensors by full name."""
    _require_plugin_adapters(model)
    outside = {key.split(".")[0] for key in model.state_dict() if not key.startswith("encoder.")}
    adapter_keys = {
        f"encoder.{layer_name}.{name}"
        for layer_name, layer in adapter_layers(model.encoder).items()
        for name in layer.adapter_parameters()
    }
    extras = {f"encoder.{name}" for name in getattr(model, TRAINABLE_ATTR)} - adapter_keys
    return sorted(outside | extras)


def save_model_adapters(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write the adapters and every other trained tensor of ``model`` to ``path`` (atomically)."""
    return save_adapters(model, path, include=trained_tensor_names(model))


def load_model_adapters(
    model: nn.Module, path: str | os.PathLike, check_base: bool = True
) -> list[str]:
    """Load a file of :func:`save_model_adapters` into a model built with the same settings.

    Args:
        model: the model, built with the settings the file was written with.
        path: the adapter file.
        check_base: check that the encoder's base weights are those the adapters were trained on
            (``peft_config: {check_base: false}`` turns it off from YAML).

    Returns:
        The names of the tensors loaded.

    Raises:
        ValueError: the file does not fit the model (another method, hyperparameter, target,
            model class or tensor shape, e.g. another ``num_classes``); every mismatch is listed.
            Or the base weights differ (``check_base``).
    """
    _require_plugin_adapters(model)
    return load_adapters(model, Path(path), check_base=check_base)


def _require_plugin_adapters(model: nn.Module) -> None:
    if not has_adapters(model):
        raise ValueError(
            f"{type(model).__name__} has no adapters from PEFTEncoderDecoderFactory; build it with "
            "model_factory: PEFTEncoderDecoderFactory and a peft_config."
        )
    if getattr(model, SPEC_ATTR)["backend"] != "plugin":
        raise ValueError(
            "Adapter files hold the plugin's adapters; with backend: hf save the Hugging Face "
            "adapters with model.encoder.save_pretrained(...) instead, or use the plugin's LORA."
        )
