"""LoKr (Yeh et al. 2023, LyCORIS): ``dW = w1 kron (w2_a w2_b)``, scaled by ``alpha / r``."""

from __future__ import annotations

import torch
from torch import nn

from terratorch_hsi_peft.peft.base import AdapterLinear
from terratorch_hsi_peft.peft.config import AdapterConfig
from terratorch_hsi_peft.peft.kron import kron_linear, resolve_kron_shapes

__all__ = ["LoKrLinear"]


class LoKrLinear(AdapterLinear):
    """LoKr on an ``nn.Linear`` in Hugging Face peft's layout and initialisation.

    ``lokr_w1`` (a1 x a2, zero) kron ``lokr_w2_a @ lokr_w2_b`` ((b1 x r)(r x b2), both
    Kaiming-uniform), scaled by ``alpha / r``. peft's ``LoKrConfig`` uses this low-rank second
    factor when ``r < max(b1, b2) / 2`` (and a full one otherwise); here it is always low rank.
    The training forward forms only the small ``b1 x b2`` factor, never the dense update.
    """

    def __init__(self, base_layer: nn.Linear, config: AdapterConfig, name: str = "layer") -> None:
        super().__init__(base_layer, config, scaling=config.alpha / config.r, name=name)
        (a1, a2), (b1, b2) = resolve_kron_shapes(
            self.out_features, self.in_features, config.a_shape, config.b_shape, name
        )
        if config.r > min(b1, b2):
            raise ValueError(
                f"{name}: LoKr rank r={config.r} exceeds the {b1}x{b2} second factor's maximum "
                f"rank {min(b1, b2)}; use r <= {min(b1, b2)} or a larger b_shape."
            )
        self.lokr_w1 = self.new_factor(a1, a2)
        self.lokr_w2_a = self.new_factor(b1, config.r)
        self.lokr_w2_b = self.new_factor(config.r, b2)
        nn.init.zeros_(self.lokr_w1)
        self.init_random(self.lokr_w2_a)
        self.init_random(self.lokr_w2_b)

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        return kron_linear(x, self.lokr_w1, self.lokr_w2_a @ self.lokr_w2_b)

    def delta_weight(self) -> torch.Tensor:
        return torch.kron(self.lokr_w1, self.lokr_w2_a @ self.lokr_w2_b)
