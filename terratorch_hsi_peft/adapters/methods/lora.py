"""LoRA (Hu et al. 2021) and LoRA+ (Hayou et al. 2024): ``dW = B A``, scaled by ``alpha / r``.

Everything about both methods: the layer, the options (``r``, ``alpha``; LoRA+ adds
``lr_ratio``) and their registration. ``LORA`` is also a Hugging Face ``peft`` name; without
``backend`` it means this one (as it always has).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from terratorch_hsi_peft.adapters.base import AdapterLinear
from terratorch_hsi_peft.adapters.config import AdapterConfig
from terratorch_hsi_peft.adapters.lr import apply_lr_ratio
from terratorch_hsi_peft.adapters.registry import (
    AdapterMethod,
    MethodOptions,
    alpha_option,
    lr_ratio_option,
    rank_option,
    register_method,
)

__all__ = ["LORA", "LORA_PLUS", "LoRALinear", "LoRAOptions", "LoRAPlusOptions"]


@dataclass(frozen=True)
class LoRAOptions(MethodOptions):
    """LoRA's keys."""

    r: int = rank_option("rank of `B A` (at most `min(in_features, out_features)` of each layer)")
    alpha: float = alpha_option()


@dataclass(frozen=True)
class LoRAPlusOptions(LoRAOptions):
    """LoRA+'s keys: LoRA's plus lambda."""

    lr_ratio: float = lr_ratio_option()


class LoRALinear(AdapterLinear):
    """LoRA on an ``nn.Linear``: ``lora_A`` (r x d_in, Kaiming-uniform), ``lora_B`` (d_out x r, 0).

    Same layout, initialisation and scaling as Hugging Face peft's ``LoraConfig(r, lora_alpha)``.
    For ``LORA_PLUS``, ``lora_B`` gets ``lr_ratio`` times the learning rate
    (see :mod:`terratorch_hsi_peft.adapters.lr`).
    """

    def __init__(self, base_layer: nn.Linear, config: AdapterConfig, name: str = "layer") -> None:
        opts = config.options
        super().__init__(base_layer, config, scaling=opts.alpha / opts.r, name=name)
        self.check_rank(
            name, "LoRA", opts.r, " Use a smaller r (r={max_rank} already adapts the whole weight)."
        )
        self.lora_A = self.new_factor(opts.r, self.in_features)
        self.lora_B = self.new_factor(self.out_features, opts.r)
        self.init_random(self.lora_A)
        nn.init.zeros_(self.lora_B)
        if config.method.has_lr_ratio:
            apply_lr_ratio(self, "lora_B", opts.lr_ratio)

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x, self.lora_A), self.lora_B)

    def delta_weight(self) -> torch.Tensor:
        return self.lora_B @ self.lora_A


LORA = register_method(
    AdapterMethod(
        name="LORA",
        label="LoRA",
        summary="LoRA (Hu et al. 2021): `dW = B A`, rank `r`, scale `alpha / r`",
        layer=LoRALinear,
        options=LoRAOptions,
        hf_peft_name_clash="plugin",
    )
)
LORA_PLUS = register_method(
    AdapterMethod(
        name="LORA_PLUS",
        label="LoRA+",
        summary="LoRA+ (Hayou et al. 2024): LoRA whose `B` trains `lr_ratio` times faster",
        layer=LoRALinear,
        options=LoRAPlusOptions,
        lr_ratio="`lora_B`",
    )
)
