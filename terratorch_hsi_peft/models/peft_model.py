"""Adapters on a built TerraTorch model: what trains, ``freeze_encoder``, merge and unmerge.

A model set up by :func:`apply_peft_to_model` carries ``peft_trainable_encoder_params``: the names
(relative to ``model.encoder``) of the encoder tensors that train, i.e. the adapter factors plus
whatever the backbone lists in ``trainable_with_adapters`` (e.g. SpectralGPT's learned group
fusion). Every other encoder tensor is frozen; necks, decoder and heads are left trainable.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from torch import nn

from terratorch_hsi_peft.adapters.config import PeftSpec
from terratorch_hsi_peft.adapters.inject import (
    adapter_layers,
    apply_peft,
    merge_adapters,
    unmerge_adapters,
)
from terratorch_hsi_peft.terratorch_compat import override_freeze_encoder

__all__ = ["apply_peft_to_model", "has_adapters", "merge_model_adapters", "unmerge_model_adapters"]

logger = logging.getLogger(__name__)

#: Attributes of a model set up by :func:`apply_peft_to_model`: the trainable encoder tensor names,
#: and the resolved peft_config (``backend`` plus TerraTorch's keys, defaults filled in).
TRAINABLE_ATTR = "peft_trainable_encoder_params"
SPEC_ATTR = "peft_config_resolved"


def apply_peft_to_model(model: nn.Module, spec: PeftSpec) -> nn.Module:
    """Put the adapters of ``spec`` on ``model.encoder`` (plugin backend) and freeze its base.

    With the ``hf`` backend TerraTorch's factory has already wrapped the encoder in a Hugging Face
    ``PeftModel``; this only fixes which encoder tensors train. In both cases ``freeze_encoder``
    of the model is replaced by one that keeps those tensors trainable (see
    :func:`_freeze_encoder_keeping_adapters`).
    """
    encoder = model.encoder
    if spec.adapter is not None:
        apply_peft(encoder, spec.adapter)
        adapters = [
            p
            for layer in adapter_layers(encoder).values()
            for p in layer.adapter_parameters().values()
        ]
    else:  # get_peft_model left exactly the Hugging Face adapter tensors trainable
        _check_hf_targets(encoder, spec.hf_peft_config["peft_config_kwargs"].get("target_modules"))
        adapters = [p for p in encoder.parameters() if p.requires_grad]
    backbone = encoder.get_base_model() if hasattr(encoder, "get_base_model") else encoder
    trainable = _keep_trainable(encoder, [*adapters, *_backbone_extras(backbone)])
    setattr(model, TRAINABLE_ATTR, tuple(trainable))
    setattr(model, SPEC_ATTR, spec.resolved_peft_config())
    # freeze_backbone: true is applied after the factory returns; the stock freeze would freeze
    # the adapters too.
    override_freeze_encoder(model, _freeze_encoder_keeping_adapters)
    return model


def has_adapters(model: nn.Module) -> bool:
    """Whether ``model`` was set up by :func:`apply_peft_to_model`."""
    return hasattr(model, TRAINABLE_ATTR)


def merge_model_adapters(model: nn.Module) -> None:
    """Fold the adapters into the encoder weights (forward at the base model's cost).

    Raises:
        ValueError: adapters holding NaN or Inf (both backends: the plugin's merge names them,
            Hugging Face peft's ``safe_merge`` names the adapter).
    """
    encoder = model.encoder
    if hasattr(encoder, "get_base_model"):
        encoder.base_model.merge_adapter(safe_merge=True)
    else:
        merge_adapters(encoder)


def unmerge_model_adapters(model: nn.Module) -> None:
    """Undo :func:`merge_model_adapters` (no-op for layers that are not merged)."""
    encoder = model.encoder
    if hasattr(encoder, "get_base_model"):
        encoder.base_model.unmerge_adapter()
    else:
        unmerge_adapters(encoder)


def _check_hf_targets(encoder: nn.Module, targets: object) -> None:
    """Hugging Face peft only fails when no entry matches; a typo beside a match is ignored."""
    if not isinstance(targets, list | tuple):
        return  # a regex string or peft's "all-linear": peft itself fails when nothing matches
    names = [name for name, _ in encoder.named_modules()]
    unmatched = [t for t in targets if not any(n == t or n.endswith(f".{t}") for n in names)]
    if unmatched:
        raise ValueError(
            f"target_modules entry {', '.join(map(repr, unmatched))} matches no module of the "
            "encoder (backend: hf); Hugging Face peft adapted the other entries only. Correct "
            "or remove the entry."
        )


def _backbone_extras(backbone: nn.Module) -> list[nn.Parameter]:
    prefixes = tuple(f"{p}." for p in getattr(backbone, "trainable_with_adapters", ()))
    return [p for name, p in backbone.named_parameters() if prefixes and name.startswith(prefixes)]


def _keep_trainable(encoder: nn.Module, keep: Iterable[nn.Parameter]) -> list[str]:
    keep_ids = {id(p) for p in keep}
    names = []
    for name, p in encoder.named_parameters():
        p.requires_grad_(id(p) in keep_ids)
        if id(p) in keep_ids:
            names.append(name)
    return names


def _freeze_encoder_keeping_adapters(self: nn.Module) -> None:
    """``freeze_backbone: true`` with adapters: freeze the base weights, keep adapters trainable.

    With PEFT the pretrained encoder weights are frozen already; what ``freeze_backbone`` could
    still freeze is the adapters, which would leave nothing to fine-tune in the encoder. So the
    flag is honoured for the base weights and the adapters (and the backbone's
    ``trainable_with_adapters`` tensors) stay trainable.
    """
    trainable = set(getattr(self, TRAINABLE_ATTR))
    for name, p in self.encoder.named_parameters():
        p.requires_grad_(name in trainable)
    logger.info(
        "freeze_backbone with PEFT adapters: encoder base weights frozen, %d adapter tensor(s) "
        "stay trainable.",
        len(trainable),
    )
