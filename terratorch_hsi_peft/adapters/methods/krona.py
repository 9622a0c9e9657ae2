"""KronA (Edalati et al. 2022) and KronA+ (Ligan et al. 2025): ``dW = A kron B``, scale ``s``.

Everything about both methods: the layer, the options (factor shapes, ``scale``,
``zero_factor``; KronA+ adds ``lr_ratio`` and ``lr_ratio_factor``) and their registration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from terratorch_hsi_peft.adapters.base import AdapterLinear
from terratorch_hsi_peft.adapters.config import AdapterConfig
from terratorch_hsi_peft.adapters.kron import kron_linear, resolve_kron_shapes
from terratorch_hsi_peft.adapters.lr import apply_lr_ratio
from terratorch_hsi_peft.adapters.registry import (
    AdapterMethod,
    MethodOptions,
    kron_shape_options,
    lr_ratio_option,
    one_of,
    option,
    register_method,
)

__all__ = ["KRONA", "KRONA_PLUS", "KronALinear", "KronAOptions", "KronAPlusOptions"]


def _scale(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite number, got {value!r}.")
    if value == 0:
        raise ValueError(f"{name}=0 switches the KronA update off; use a non-zero scale (1.0).")
    return float(value)


_A_SHAPE, _B_SHAPE = kron_shape_options()


@dataclass(frozen=True)
class KronAOptions(MethodOptions):
    """KronA's keys."""

    a_shape: tuple[int, int] | None = _A_SHAPE
    b_shape: tuple[int, int] | None = _B_SHAPE
    scale: float = option(1.0, _scale, "fixed scale `s` of `s (A kron B)`")
    zero_factor: Literal["A", "B"] = option(
        "A",
        one_of("A", "B"),
        "KronA factor that starts at zero (the model starts equal to the base)",
    )


@dataclass(frozen=True)
class KronAPlusOptions(KronAOptions):
    """KronA+'s keys: KronA's plus lambda and the factor it applies to."""

    lr_ratio: float = lr_ratio_option()
    lr_ratio_factor: Literal["zero", "A", "B"] = option(
        "zero",
        one_of("zero", "A", "B"),
        "factor that gets lambda: `zero` (the zero-initialised one, as LoRA+'s `B`), `A` or `B`",
    )


class KronALinear(AdapterLinear):
    """KronA on an ``nn.Linear``: ``krona_A`` (a1 x a2) kron ``krona_B`` (b1 x b2), times ``scale``.

    ``zero_factor`` starts at zero (default ``A``), the other factor Kaiming-uniform. For
    ``KRONA_PLUS`` the factor named by ``lr_ratio_factor`` (default: the zero one) gets
    ``lr_ratio`` times the learning rate (see :mod:`terratorch_hsi_peft.adapters.lr`). The training
    forward applies the factors to the reshaped input and never forms the dense update.
    """

    def __init__(self, base_layer: nn.Linear, config: AdapterConfig, name: str = "layer") -> None:
        opts = config.options
        super().__init__(base_layer, config, scaling=opts.scale, name=name)
        (a1, a2), (b1, b2) = resolve_kron_shapes(
            self.out_features, self.in_features, opts.a_shape, opts.b_shape, name
        )
        self.krona_A = self.new_factor(a1, a2)
        self.krona_B = self.new_factor(b1, b2)
        zero, random = ("A", "B") if opts.zero_factor == "A" else ("B", "A")
        nn.init.zeros_(getattr(self, f"krona_{zero}"))
        self.init_random(getattr(self, f"krona_{random}"))
        if config.method.has_lr_ratio:
            boosted = zero if opts.lr_ratio_factor == "zero" else opts.lr_ratio_factor
            apply_lr_ratio(self, f"krona_{boosted}", opts.lr_ratio)

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        return kron_linear(x, self.krona_A, self.krona_B)

    def delta_weight(self) -> torch.Tensor:
        return torch.kron(self.krona_A, self.krona_B)


KRONA = register_method(
    AdapterMethod(
        name="KRONA",
        label="KronA",
        summary="KronA (Edalati et al. 2022): `dW = A kron B`, fixed scale `s`",
        layer=KronALinear,
        options=KronAOptions,
    )
)
KRONA_PLUS = register_method(
    AdapterMethod(
        name="KRONA_PLUS",
        label="KronA+",
        summary="KronA+ (Ligan et al. 2025): KronA with one factor trained `lr_ratio` times faster",
        layer=KronALinear,
        options=KronAPlusOptions,
        lr_ratio="`lr_ratio_factor` (default: the zero-initialised factor)",
    )
)
