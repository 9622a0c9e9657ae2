"""Adapter files: safetensors with the tuned tensors and metadata checked on loading.

A file holds every adapter factor of the model (stored tensors, i.e. ``P`` of the "+" methods),
optionally the tensors of caller-chosen modules (a head, a decoder), and string metadata:
``format``, ``format_version``, ``library_version``, ``method``, ``peft_config`` (JSON of the
TerraTorch ``peft_config`` dict), ``targets`` (JSON list of adapted layers), ``shapes`` (JSON
``{tensor: shape}``), ``included`` (JSON list of the extra tensors), ``base_model_class`` and
``base_model_name``. Files are written atomically (temporary file, then ``os.replace``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes
from torch import nn

from terratorch_hsi_peft.peft.inject import adapter_layers
from terratorch_hsi_peft.utils.download import atomic_write

__all__ = ["FORMAT_VERSION", "adapter_file_bytes", "load_adapters", "save_adapters"]

FORMAT = "terratorch_hsi_peft.adapters"
FORMAT_VERSION = "1"


def save_adapters(
    model: nn.Module,
    path: str | os.PathLike,
    include: Sequence[str] = (),
    base_model_name: str | None = None,
) -> Path:
    """Write the adapters of ``model`` (and the modules named in ``include``) to ``path``.

    Args:
        model: a model prepared with :func:`apply_peft` (merged or not: factors are unchanged).
        path: destination ``.safetensors`` file; replaced atomically.
        include: module or tensor names of ``model`` to store as well (e.g. ``["head"]``): every
            state-dict tensor whose key equals an entry or starts with ``entry + "."``.
        base_model_name: name of the pretrained model (e.g. ``"spectralgpt_vit_base"``); defaults
            to the model's class name. :func:`load_adapters` can check it.

    Returns:
        The path written.
    """
    data = _serialise(model, include, base_model_name)
    path = Path(path)
    with atomic_write(path) as f:
        f.write(data)
    return path


def adapter_file_bytes(
    model: nn.Module, include: Sequence[str] = (), base_model_name: str | None = None
) -> int:
    """The exact size in bytes of the file :func:`save_adapters` would write."""
    return len(_serialise(model, include, base_model_name))


def load_adapters(
    model: nn.Module, path: str | os.PathLike, base_model_name: str | None = None
) -> list[str]:
    """Load a file written by :func:`save_adapters` into ``model`` (already prepared by apply_peft).

    The metadata must match the model: method and hyperparameters, the set of adapted layers,
    the base model class (and ``base_model_name`` when given), and every tensor's name and shape.

    Returns:
        The names of the tensors loaded (adapter factors and included tensors).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is unreadable or not an adapter file, or it does not fit the model
            (every mismatch is listed); the model is left unchanged.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No adapter file at {path}; check the path.")
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as err:
        raise ValueError(
            f"{path} is not a readable safetensors file ({err}): it is truncated, corrupt or not "
            "an adapter file. Write it again with save_adapters."
        ) from None
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path} has no adapter metadata: it was not written by save_adapters.")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path} has adapter format version {metadata.get('format_version')!r}; this library "
            f"reads version {FORMAT_VERSION}. Install the terratorch-hsi-peft version that wrote "
            f"it ({metadata.get('library_version')})."
        )
    problems = _mismatches(model, metadata, tensors, base_model_name)
    if problems:
        raise ValueError(
            f"{path} does not fit this model:\n- " + "\n- ".join(problems) + "\nBuild the model "
            f"with the file's configuration: apply_peft(model, {metadata['peft_config']})."
        )
    result = model.load_state_dict(tensors, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys  # excluded by _mismatches
    return sorted(tensors)


def _serialise(model: nn.Module, include: Sequence[str], base_model_name: str | None) -> bytes:
    layers = adapter_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no adapters; call apply_peft first.")
    tensors = _adapter_tensors(layers)
    extra = _included_tensors(model, include, exclude=tensors)
    tensors.update(extra)
    config = next(iter(layers.values())).config
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": _library_version(),
        "method": config.method.value,
        "peft_config": json.dumps(config.to_peft_config()),
        "targets": json.dumps(sorted(layers)),
        "shapes": json.dumps({key: list(t.shape) for key, t in tensors.items()}),
        "included": json.dumps(sorted(extra)),
        "base_model_class": _class_path(model),
        "base_model_name": base_model_name or type(model).__name__,
    }
    cpu = {key: t.detach().to("cpu").contiguous() for key, t in tensors.items()}
    return safetensors_bytes(cpu, metadata=metadata)


def _adapter_tensors(layers: dict) -> dict[str, torch.Tensor]:
    return {
        f"{layer_name}.{name}": p
        for layer_name, layer in layers.items()
        for name, p in layer.adapter_parameters().items()
    }


def _included_tensors(
    model: nn.Module, include: Sequence[str], exclude: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    if isinstance(include, str):
        include = [include]
    state = model.state_dict()
    extra = {}
    for entry in include:
        keys = [k for k in state if k == entry or k.startswith(f"{entry}.")]
        if not keys:
            raise ValueError(
                f"include entry {entry!r} matches no tensor of {type(model).__name__}; name a "
                f"module or tensor of its state dict (e.g. {next(iter(state), 'head')!r})."
            )
        extra.update({k: state[k] for k in keys if k not in exclude})
    return extra


def _mismatches(
    model: nn.Module,
    metadata: dict[str, str],
    tensors: dict[str, torch.Tensor],
    base_model_name: str | None,
) -> list[str]:
    layers = adapter_layers(model)
    if not layers:
        return [
            f"the model has no adapters (the file holds {metadata.get('method')} adapters); "
            "call apply_peft first"
        ]
    problems = []
    merged = [name for name, layer in layers.items() if layer.merged]
    if merged:
        problems.append(f"adapters are merged ({merged[0]}, ...): call unmerge_adapters first")
    config = next(iter(layers.values())).config.to_peft_config()
    saved = json.loads(metadata["peft_config"])
    if saved["method"] != config["method"]:
        problems.append(f"method: file {saved['method']}, model {config['method']}")
    if saved.get("replace_qkv") != config["replace_qkv"]:
        problems.append(
            f"replace_qkv: file {saved.get('replace_qkv')!r}, model {config['replace_qkv']!r}"
        )
    saved_kwargs, kwargs = saved["peft_config_kwargs"], config["peft_config_kwargs"]
    for key in sorted((set(saved_kwargs) | set(kwargs)) - {"target_modules"}):
        if saved_kwargs.get(key) != kwargs.get(key):
            problems.append(f"{key}: file {saved_kwargs.get(key)!r}, model {kwargs.get(key)!r}")
    saved_targets, targets = set(json.loads(metadata["targets"])), set(layers)
    if saved_targets != targets:
        problems.append(
            f"adapted layers differ: only in the file {sorted(saved_targets - targets)[:3]}, "
            f"only in the model {sorted(targets - saved_targets)[:3]}"
        )
    if metadata.get("base_model_class") != _class_path(model):
        problems.append(
            f"base model class: file {metadata.get('base_model_class')}, model {_class_path(model)}"
        )
    if base_model_name is not None and metadata.get("base_model_name") != base_model_name:
        problems.append(
            f"base model name: file {metadata.get('base_model_name')!r}, expected "
            f"{base_model_name!r}"
        )
    state = model.state_dict()
    for key, t in tensors.items():
        if key not in state:
            problems.append(f"tensor {key} of the file is not in the model")
        elif state[key].shape != t.shape:
            problems.append(
                f"tensor {key}: file shape {list(t.shape)}, model {list(state[key].shape)}"
            )
    missing = sorted(set(_adapter_tensors(layers)) - set(tensors))
    if missing:
        problems.append(f"adapter tensors missing from the file: {missing[:3]}")
    return problems


def _class_path(model: nn.Module) -> str:
    cls = type(model)
    return f"{cls.__module__}.{cls.__qualname__}"


def _library_version() -> str:
    try:
        return version("terratorch-hsi-peft")
    except PackageNotFoundError:  # a source tree that was not installed
        return "0.0.0"
