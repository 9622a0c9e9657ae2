"""Shared machinery of the adapted Linear layers: forward, merge/unmerge, dtypes."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import nn

from terratorch_hsi_peft.peft.config import AdapterConfig

__all__ = ["AdapterLinear"]


class AdapterLinear(nn.Module, ABC):
    """An ``nn.Linear`` plus a trainable update: ``y = base(x) + scaling * dW dropout(x)``.

    Subclasses create their factors with :meth:`new_factor` and define the efficient
    :meth:`adapter_forward` (``dW x``, unscaled) and the dense :meth:`delta_weight` (merging only).

    Adapter factors are float32 when the base weight is half precision (float16/bfloat16) and
    otherwise in the base weight's dtype. Under autocast the adapter path runs in the autocast
    dtype; without autocast the input is cast to the factors' dtype and the result back.

    Attributes:
        base_layer: the wrapped Linear (its parameters stay frozen by :func:`apply_peft`).
        config: the shared adapter configuration.
        scaling: the factor ``s`` of ``s * dW``.
        merged: whether ``s * dW`` is folded into ``base_layer.weight`` (forward then skips the
            adapter path, so adapters get no gradient while merged).
    """

    def __init__(
        self, base_layer: nn.Linear, config: AdapterConfig, scaling: float, name: str
    ) -> None:
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(
                f"{name}: {config.method.value} adapts nn.Linear layers only, got "
                f"{type(base_layer).__name__}; target the Linear layers inside it."
            )
        self.base_layer = base_layer
        self.config = config
        self.scaling = float(scaling)
        self.in_features = base_layer.in_features
        self.out_features = base_layer.out_features
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.merged = False

    def new_factor(self, rows: int, cols: int) -> nn.Parameter:
        """An uninitialised factor on the base weight's device, in the adapter dtype."""
        weight = self.base_layer.weight
        dtype = weight.dtype if torch.finfo(weight.dtype).bits >= 32 else torch.float32
        return nn.Parameter(torch.empty(rows, cols, dtype=dtype, device=weight.device))

    @staticmethod
    def init_random(factor: torch.Tensor) -> None:
        """Kaiming-uniform, as Hugging Face peft initialises LoRA's ``A``."""
        nn.init.kaiming_uniform_(factor, a=math.sqrt(5))

    @abstractmethod
    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ dW.T`` (unscaled) without forming the dense ``dW``."""

    @abstractmethod
    def delta_weight(self) -> torch.Tensor:
        """The dense unscaled update ``dW`` (``out_features x in_features``), for merging."""

    def adapter_parameters(self) -> dict[str, nn.Parameter]:
        """The trainable adapter tensors, by name relative to this layer (no base weights)."""
        return {
            name: p for name, p in self.named_parameters() if not name.startswith("base_layer.")
        }

    @property
    def adapter_dtype(self) -> torch.dtype:
        """The dtype of the adapter factors."""
        # Every layer keeps at least one factor unparametrized, directly in ``_parameters``.
        return next(iter(self._parameters.values())).dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        if self.merged:
            return y
        h = self.dropout(x)
        if not torch.is_autocast_enabled(h.device.type):
            h = h.to(self.adapter_dtype)
        return y + (self.adapter_forward(h) * self.scaling).to(y.dtype)

    @torch.no_grad()
    def merge(self) -> None:
        """Fold ``scaling * dW`` into the base weight (in at least float32). No-op if merged."""
        if not self.merged:
            self._add_to_weight(self.scaling)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract ``scaling * dW`` from the base weight again. No-op if not merged."""
        if self.merged:
            self._add_to_weight(-self.scaling)
            self.merged = False

    def _add_to_weight(self, factor: float) -> None:
        weight = self.base_layer.weight
        work = torch.promote_types(weight.dtype, torch.float32)
        weight.copy_(weight.to(work) + factor * self.delta_weight().to(work))

    def extra_repr(self) -> str:
        return f"method={self.config.method.value}, scaling={self.scaling:g}, merged={self.merged}"
