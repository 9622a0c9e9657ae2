"""LoKr (Yeh et al. 2023, LyCORIS): ``dW = w1 kron (w2_a w2_b)``, scaled by ``alpha / r``.

Everything about the method: the layer, the options (``r``, ``alpha``, factor shapes) and its
registration. ``LOKR`` is also a Hugging Face ``peft`` name; without ``backend`` it means this
one (as it always has).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from terratorch_hsi_peft.adapters.base import AdapterLinear
from terratorch_hsi_peft.adapters.config import AdapterConfig
from terratorch_hsi_peft.adapters.kron import kron_linear, resolve_kron_shapes
from terratorch_hsi_peft.adapters.registry import (
    AdapterMethod,
    MethodOptions,
    alpha_option,
    kron_shape_options,
    rank_option,
    register_method,
)

__all__ = ["LOKR", "LoKrLinear", "LoKrOptions"]

_A_SHAPE, _B_SHAPE = kron_shape_options()


@dataclass(frozen=True)
class LoKrOptions(MethodOptions):
    """LoKr's keys."""

    r: int = rank_option("rank of the second factor `w2_a w2_b` (at most its smaller side)")
    alpha: float = alpha_option()
    a_shape: tuple[int, int] | None = _A_SHAPE
    b_shape: tuple[int, int] | None = _B_SHAPE


class LoKrLinear(AdapterLinear):
    """LoKr on an ``nn.Linear`` in Hugging Face peft's layout and initialisation.

    ``lokr_w1`` (a1 x a2, zero) kron ``lokr_w2_a @ lokr_w2_b`` ((b1 x r)(r x b2), both
    Kaiming-uniform), scaled by ``alpha / r``. peft's ``LoKrConfig`` uses this low-rank second
    factor when ``r < max(b1, b2) / 2`` (and a full one otherwise); here it is always low rank.
    The training forward forms only the small ``b1 x b2`` factor, never the dense update.
    """

    def __init__(self, base_layer: nn.Linear, config: AdapterConfig, name: str = "layer") -> None:
        opts = config.options
        super().__init__(base_layer, config, scaling=opts.alpha / opts.r, name=name)
        (a1, a2), (b1, b2) = resolve_kron_shapes(
            self.out_features, self.in_features, opts.a_shape, opts.b_shape, name
        )
        if opts.r > min(b1, b2):
            raise ValueError(
                f"{name}: LoKr rank r={opts.r} exceeds the {b1}x{b2} second factor's maximum "
                f"rank {min(b1, b2)}; use r <= {min(b1, b2)} or a larger b_shape."
            )
        self.lokr_w1 = self.new_factor(a1, a2)
        self.lokr_w2_a = self.new_factor(b1, opts.r)
        self.lokr_w2_b = self.new_factor(opts.r, b2)
        nn.init.zeros_(self.lokr_w1)
        self.init_random(self.lokr_w2_a)
        self.init_random(self.lokr_w2_b)

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        return kron_linear(x, self.lokr_w1, self.lokr_w2_a @ self.lokr_w2_b)

    def delta_weight(self) -> torch.Tensor:
        return torch.kron(self.lokr_w1, self.lokr_w2_a @ self.lokr_w2_b)


LOKR = register_method(
    AdapterMethod(
        name="LOKR",
        label="LoKr",
        summary="LoKr (Yeh et al. 2023): `dW = w1 kron (w2_a w2_b)`, scale `alpha / r`",
        layer=LoKrLinear,
        options=LoKrOptions,
        hf_peft_name_clash="plugin",
    )
)
