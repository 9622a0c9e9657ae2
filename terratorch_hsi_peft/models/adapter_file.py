"""The small artifact of a PEFT run: every tensor training changes, in one adapter file.

The file is :func:`terratorch_hsi_peft.peft.save_adapters`'s format (safetensors plus metadata,
checked on loading) written for the whole TerraTorch model: the encoder's adapter factors, the
backbone's ``trainable_with_adapters`` tensors (e.g. SpectralGPT's learned group fusion) and the
full state of everything outside the encoder (necks, decoder, heads: parameters and buffers such
as BatchNorm statistics). With the pretrained backbone it reproduces the trained model.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from terratorch_hsi_peft.models.peft_model import SPEC_ATTR, TRAINABLE_ATTR, has_adapters
from terratorch_hsi_peft.peft.inject import adapter_layers
from terratorch_hsi_peft.peft.io import load_adapters, save_adapters

__all__ = ["load_adapter_file", "save_adapter_file", "trained_tensor_names"]


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


def save_adapter_file(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write the adapters and every other trained tensor of ``model`` to ``path`` (atomically)."""
    return save_adapters(model, path, include=trained_tensor_names(model))


def load_adapter_file(model: nn.Module, path: str | os.PathLike) -> list[str]:
    """Load a file of :func:`save_adapter_file` into a model built with the same settings.

    Returns:
        The names of the tensors loaded.

    Raises:
        ValueError: the file does not fit the model (another method, hyperparameter, target,
            model class or tensor shape, e.g. another ``num_classes``); every mismatch is listed.
    """
    _require_plugin_adapters(model)
    return load_adapters(model, Path(path))


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
