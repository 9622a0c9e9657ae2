"""The one line a PEFT run prints when its model is built: what is adapted and what trains."""

from __future__ import annotations

import re

from torch import nn

from terratorch_hsi_peft.models.adapter_file import adapter_file_parts
from terratorch_hsi_peft.models.peft_model import SPEC_ATTR, TRAINABLE_ATTR, has_adapters

__all__ = ["peft_summary"]


def peft_summary(model: nn.Module) -> str:
    """One line: method, adapted layers, adapter parameters and their share of the backbone, the
    trainable total (adapters, other encoder tensors, necks/decoder/heads) and, for the plugin's
    adapters, the two parts of the adapter file.

    Raises:
        ValueError: ``model`` was not set up by ``PEFTEncoderDecoderFactory`` with a peft_config.
    """
    if not has_adapters(model):
        raise ValueError(f"{type(model).__name__} has no adapters from PEFTEncoderDecoderFactory.")
    spec = getattr(model, SPEC_ATTR)
    encoder = model.encoder
    backbone = encoder.get_base_model() if hasattr(encoder, "get_base_model") else encoder
    extras = tuple(getattr(backbone, "trainable_with_adapters", ()))
    trainable = set(getattr(model, TRAINABLE_ATTR))
    named = dict(encoder.named_parameters())
    adapter_names = [n for n in trainable if not any(f".{e}." in f".{n}" for e in extras)]
    adapters = sum(named[n].numel() for n in adapter_names)
    extra = sum(named[n].numel() for n in trainable) - adapters
    backbone_total = sum(p.numel() for p in named.values()) - adapters
    outside = sum(
        p.numel()
        for n, p in model.named_parameters()
        if p.requires_grad and not n.startswith("encoder.")
    )
    layers = sorted({_pattern(n) for n in adapter_names})
    line = (
        f"PEFT {spec['method']} ({spec['backend']}) on {type(backbone).__name__}, layers "
        f"{', '.join(layers)}: {adapters:,} adapter parameters = "
        f"{100 * adapters / backbone_total:.3f}% of the backbone's {backbone_total:,}; "
        f"trainable {adapters + extra + outside:,} (adapters {adapters:,}, other encoder tensors "
        f"{extra:,}, necks/decoder/heads {outside:,})"
    )
    if spec["backend"] == "plugin":
        line += f"; adapter file: {adapter_file_parts(model)}"
    return line


def _pattern(name: str) -> str:
    """``blocks.3.attn.q.krona_A`` -> ``blocks.*.attn.q``: the adapted layer, any block."""
    layer = re.sub(r"\.(parametrizations\.)?[^.]+(\.original)?$", "", name)
    layer = re.sub(r"(^|\.)(base_model\.model\.)", r"\1", layer)
    return re.sub(r"\.\d+\.", ".*.", layer)
