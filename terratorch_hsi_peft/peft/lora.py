"""LoRA (Hu et al. 2021) and LoRA+ (Hayou et al. 2024): ``dW = B A``, scaled by ``alpha / r``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from terratorch_hsi_peft.peft.base import AdapterLinear
from terratorch_hsi_peft.peft.config import AdapterConfig
from terratorch_hsi_peft.peft.lr import apply_lr_ratio

__all__ = ["LoRALinear"]


class LoRALinear(AdapterLinear):
    """LoRA on an ``nn.Linear``: ``lora_A`` (r x d_in, Kaiming-uniform), ``lora_B`` (d_out x r, 0).

    Same layout, initialisation and scaling as Hugging Face peft's ``LoraConfig(r, lora_alpha)``.
    For ``LORA_PLUS``, ``lora_B`` gets ``lr_ratio`` times the learning rate
    (see :mod:`terratorch_hsi_peft.peft.lr`).
    """

    def __init__(self, base_layer: nn.Linear, config: AdapterConfig, name: str = "layer") -> None:
        super().__init__(base_layer, config, scaling=config.alpha / config.r, name=name)
        max_rank = min(self.in_features, self.out_features)
        if config.r > max_rank:
            raise ValueError(
                f"{name}: LoRA rank r={config.r} exceeds the rank of its {self.out_features}x"
                f"{self.in_features} weight; r must be <= min(in_features, out_features) = "
                f"{max_rank}. Use a smaller r (r={max_rank} already adapts the whole weight)."
            )
        self.lora_A = self.new_factor(config.r, self.in_features)
        self.lora_B = self.new_factor(self.out_features, config.r)
        self.init_random(self.lora_A)
        nn.init.zeros_(self.lora_B)
        if config.method.has_lr_ratio:
            apply_lr_ratio(self, "lora_B", config.lr_ratio)

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x, self.lora_A), self.lora_B)

    def delta_weight(self) -> torch.Tensor:
        return self.lora_B @ self.lora_A
