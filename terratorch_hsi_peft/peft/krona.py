"""KronA (Edalati et al. 2022) and KronA+ (Ligan et al. 2025): ``dW = A kron B``, scale ``s``."""

from __future__ import annotations

import torch
from torch import nn

from terratorch_hsi_peft.peft.base import AdapterLinear
from terratorch_hsi_peft.peft.config import AdapterConfig
from terratorch_hsi_peft.peft.kron import kron_linear, resolve_kron_shapes
from terratorch_hsi_peft.peft.lr import apply_lr_ratio

__all__ = ["KronALinear"]


class KronALinear(AdapterLinear):
    """KronA on an ``nn.Linear``: ``krona_A`` (a1 x a2) kron ``krona_B`` (b1 x b2), times ``scale``.

    ``config.zero_factor`` starts at zero (default ``A``), the other factor Kaiming-uniform.
    For ``KRONA_PLUS`` the factor named by ``config.lr_ratio_factor`` (default: the zero one) gets
    ``lr_ratio`` times the learning rate (see :mod:`terratorch_hsi_peft.peft.lr`). The training
    forward applies the factors to the reshaped input and never forms the dense update.
    """

    def __init__(self, base_layer: nn.Linear, config: AdapterConfig, name: str = "layer") -> None:
        super().__init__(base_layer, config, scaling=config.scale, name=name)
        (a1, a2), (b1, b2) = resolve_kron_shapes(
            self.out_features, self.in_features, config.a_shape, config.b_shape, name
        )
        self.krona_A = self.new_factor(a1, a2)
        self.krona_B = self.new_factor(b1, b2)
        zero, random = ("A", "B") if config.zero_factor == "A" else ("B", "A")
        nn.init.zeros_(getattr(self, f"krona_{zero}"))
        self.init_random(getattr(self, f"krona_{random}"))
        if config.method.has_lr_ratio:
            boosted = zero if config.lr_ratio_factor == "zero" else config.lr_ratio_factor
            apply_lr_ratio(self, f"krona_{boosted}", config.lr_ratio)

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        return kron_linear(x, self.krona_A, self.krona_B)

    def delta_weight(self) -> torch.Tensor:
        return torch.kron(self.krona_A, self.krona_B)
