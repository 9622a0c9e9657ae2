"""LoHa (Hyeon-Woo et al. 2022 "FedPara"; Yeh et al. 2023, LyCORIS): a Hadamard product of two
low-rank products, ``dW = (w1_a w1_b) * (w2_a w2_b)``, scaled by ``alpha / r``.

Everything about the method: the layer, the options (``r``, ``alpha``) and its registration.
``LOHA`` is also a Hugging Face ``peft`` name, and ``method: LOHA`` meant ``peft``'s before this
module existed, so a ``peft_config`` naming it must say ``backend: plugin`` or ``backend: hf``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from terratorch_hsi_peft.adapters.base import AdapterLinear
from terratorch_hsi_peft.adapters.config import AdapterConfig
from terratorch_hsi_peft.adapters.registry import (
    AdapterMethod,
    MethodOptions,
    alpha_option,
    rank_option,
    register_method,
)

__all__ = ["LOHA", "LoHaLinear", "LoHaOptions"]


@dataclass(frozen=True)
class LoHaOptions(MethodOptions):
    """LoHa's keys."""

    r: int = rank_option(
        "rank of each of LoHa's two products (at most `min(in_features, out_features)`)"
    )
    alpha: float = alpha_option()


class LoHaLinear(AdapterLinear):
    """LoHa on an ``nn.Linear`` in Hugging Face peft's layout and initialisation.

    ``hada_w1_a`` (d_out x r), ``hada_w1_b`` (r x d_in) and ``hada_w2_a`` (d_out x r) are
    Kaiming-uniform and ``hada_w2_b`` (r x d_in) is zero, as peft's ``LoHaConfig`` (linear
    layers, ``init_weights=True``). ``dW`` has rank up to ``r ** 2`` with ``4 r d`` parameters.
    The forward goes through the ``r ** 2`` Khatri-Rao products of the factors
    (``dW = (w1_a . w2_a) (w1_b . w2_b)``, rows and columns paired), without the dense
    ``d_out x d_in`` update, while that is cheaper (``r ** 2 (d_in + d_out) < d_in d_out``).
    """

    def __init__(self, base_layer: nn.Linear, config: AdapterConfig, name: str = "layer") -> None:
        opts = config.options
        super().__init__(base_layer, config, scaling=opts.alpha / opts.r, name=name)
        self.check_rank(name, "LoHa", opts.r)
        self.hada_w1_a = self.new_factor(self.out_features, opts.r)
        self.hada_w1_b = self.new_factor(opts.r, self.in_features)
        self.hada_w2_a = self.new_factor(self.out_features, opts.r)
        self.hada_w2_b = self.new_factor(opts.r, self.in_features)
        for factor in (self.hada_w1_a, self.hada_w1_b, self.hada_w2_a):
            self.init_random(factor)
        nn.init.zeros_(self.hada_w2_b)
        self._factored = opts.r**2 * (self.in_features + self.out_features) < (
            self.in_features * self.out_features
        )

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._factored:
            return F.linear(x, self.delta_weight())
        r = self.hada_w1_a.shape[1]
        # Khatri-Rao factors: left[o, p r + q] = w1_a[o, p] w2_a[o, q] and
        # right[p r + q, i] = w1_b[p, i] w2_b[q, i], so left @ right = dW.
        left = (self.hada_w1_a[:, :, None] * self.hada_w2_a[:, None, :]).reshape(-1, r * r)
        right = (self.hada_w1_b[:, None, :] * self.hada_w2_b[None, :, :]).reshape(r * r, -1)
        return F.linear(F.linear(x, right), left)

    def delta_weight(self) -> torch.Tensor:
        return (self.hada_w1_a @ self.hada_w1_b) * (self.hada_w2_a @ self.hada_w2_b)


LOHA = register_method(
    AdapterMethod(
        name="LOHA",
        label="LoHa",
        summary="LoHa (Yeh et al. 2023): `dW = (w1_a w1_b) * (w2_a w2_b)`, scale `alpha / r`",
        layer=LoHaLinear,
        options=LoHaOptions,
        hf_peft_name_clash="require_backend",
    )
)
