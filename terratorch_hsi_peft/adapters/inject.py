"""Put adapters into a model: target matching, wrapping, freezing, merge and unmerge."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from torch import nn

from terratorch_hsi_peft.adapters.base import AdapterLinear
from terratorch_hsi_peft.adapters.config import AdapterConfig
from terratorch_hsi_peft.adapters.qkv import split_qkv

__all__ = [
    "adapter_layers",
    "apply_peft",
    "find_targets",
    "merge_adapters",
    "unmerge_adapters",
]


def apply_peft(
    model: nn.Module, config: Mapping[str, Any] | str | os.PathLike | AdapterConfig
) -> nn.Module:
    """Wrap the targeted Linear layers of ``model`` with adapters and freeze everything else.

    Args:
        model: any module (modified in place). Every parameter of it that is not an adapter
            factor gets ``requires_grad=False``; modules outside it (e.g. a head) are untouched.
        config: TerraTorch's ``peft_config`` dict (``method``, ``replace_qkv``,
            ``peft_config_kwargs``), the path of a method file holding it, or an
            :class:`AdapterConfig`; parsed as the model factory parses it
            (:meth:`AdapterConfig.from_peft_config`).

    Returns:
        ``model`` itself. The adapted layers' output equals the base layers' until training
        changes the adapters (one factor of each update starts at zero).

    Raises:
        TypeError: bad config keys, or a target that is not an ``nn.Linear``.
        ValueError: bad values, a target entry that matches no module, factor shapes or a rank
            that do not fit a layer (LoRA's ``r`` above ``min(in_features, out_features)``), or
            a model that already has adapters.
    """
    if not isinstance(config, AdapterConfig):
        config = AdapterConfig.from_peft_config(config)
    if adapter_layers(model):
        raise ValueError(
            "The model already has adapters; apply_peft adds one set. Build a fresh model to use "
            "another configuration."
        )
    if config.replace_qkv is not None:
        split_qkv(model, config.replace_qkv)
    adapter_class = config.method.layer
    # Build every adapter before swapping any in, so a bad shape leaves the model unchanged.
    adapted = {
        name: adapter_class(model.get_submodule(name), config, name=name)
        for name in find_targets(model, config.target_modules)
    }
    for name, layer in adapted.items():
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, layer)
    model.requires_grad_(False)
    for layer in adapted.values():
        for p in layer.adapter_parameters().values():
            p.requires_grad_(True)
    return model


def find_targets(model: nn.Module, target_modules: str | tuple[str, ...] | list[str]) -> list[str]:
    """Qualified names of the Linear layers ``target_modules`` selects.

    A list entry selects a module whose name equals it or ends with ``"." + entry`` (as Hugging
    Face peft matches); every entry must select at least one module, so a typo in one entry is
    an error even when the others match. A single string is a regex that must match the whole
    name of at least one module.

    Raises:
        ValueError: an entry (or the regex) matches nothing; the message names it, what the other
            entries matched and the model's Linear layers (and hints at ``replace_qkv`` when the
            model fuses q, k and v into one ``qkv`` Linear).
        TypeError: a match is not an ``nn.Linear``.
    """
    names = [name for name, _ in model.named_modules() if name]
    if isinstance(target_modules, str):
        pattern = re.compile(target_modules)
        per_entry = {target_modules: [n for n in names if pattern.fullmatch(n) is not None]}
    else:
        per_entry = {t: [n for n in names if n == t or n.endswith(f".{t}")] for t in target_modules}
    unmatched = [entry for entry, found in per_entry.items() if not found]
    if unmatched:
        raise ValueError(_no_match_message(model, unmatched, per_entry))
    selected = {n for found in per_entry.values() for n in found}
    matches = [(name, m) for name, m in model.named_modules() if name in selected]
    wrong = [f"{name} ({type(m).__name__})" for name, m in matches if not isinstance(m, nn.Linear)]
    if wrong:
        raise TypeError(
            f"target_modules={target_modules!r} matches modules that are not nn.Linear: "
            f"{', '.join(wrong[:5])}. Adapters go on Linear layers; name those inside them "
            "(e.g. 'attn.q' rather than 'attn')."
        )
    return [name for name, _ in matches]


def _no_match_message(
    model: nn.Module, unmatched: list[str], per_entry: dict[str, list[str]]
) -> str:
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    # Layer names without block indices (blocks.3.attn.q -> attn.q) read better than a long list.
    endings = sorted({re.sub(r"^(.*\.)?\d+\.", "", name) for name in linears})
    shown = ", ".join(endings[:12]) + (", ..." if len(endings) > 12 else "")
    matched = [
        f"{entry!r} -> {found[0]}" + (f" and {len(found) - 1} more" if len(found) > 1 else "")
        for entry, found in per_entry.items()
        if found
    ]
    message = (
        f"target_modules entry {', '.join(map(repr, unmatched))} matches no module of "
        f"{type(model).__name__}"
        + (f" (the other entries matched: {'; '.join(matched)})" if matched else "")
        + f". Its Linear layers are named (block numbers left out): {shown or 'none'}. "
        "Correct or remove the entry."
    )
    fused = [name for name in linears if name == "qkv" or name.endswith(".qkv")]
    if fused:
        message += (
            f" This model fuses q, k and v into one Linear ({fused[0]}): set replace_qkv: qkv "
            "to split it, then target q_linear / k_linear / v_linear."
        )
    return message


def adapter_layers(model: nn.Module) -> dict[str, AdapterLinear]:
    """The adapted layers of ``model`` by qualified name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, AdapterLinear)}


def merge_adapters(model: nn.Module) -> int:
    """Fold every adapter's ``scaling * dW`` into its base weight; returns how many were merged.

    Already merged layers are left alone (merging twice is a no-op). The forward then costs what
    the base model costs; :func:`unmerge_adapters` restores the base weights (exactly up to
    rounding in the weight's dtype).

    Raises:
        ValueError: an adapter tensor holds NaN or Inf (every such tensor is named), or a merged
            weight would overflow; no layer is left merged by this call.
    """
    return _switch(model, merge=True)


def unmerge_adapters(model: nn.Module) -> int:
    """Undo :func:`merge_adapters`; returns how many layers were unmerged (no-op if none)."""
    return _switch(model, merge=False)


def _switch(model: nn.Module, merge: bool) -> int:
    layers = adapter_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no adapters; call apply_peft first.")
    changed = [layer for layer in layers.values() if layer.merged != merge]
    if not merge:
        for layer in changed:
            layer.unmerge()
        return len(changed)
    bad = [f"{layer.layer_name}.{name}" for layer in changed for name in layer.non_finite_tensors()]
    if bad:
        shown = ", ".join(bad[:8]) + (f", ... ({len(bad)} in all)" if len(bad) > 8 else "")
        raise ValueError(
            f"Adapter tensor(s) {shown} hold NaN or Inf; merging would spoil the base weights, "
            "so nothing was merged. Load adapters from a run that did not diverge (lower the "
            "learning rate, or train in float32)."
        )
    done = []
    try:
        for layer in changed:
            layer.merge()
            done.append(layer)
    except ValueError:
        for layer in done:  # all or nothing
            layer.unmerge()
        raise
    return len(changed)
