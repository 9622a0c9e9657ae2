"""Lambda (``lr_ratio``) of LoRA+ and KronA+ by reparameterisation.

The lambda factor ``F`` is stored as a trainable tensor ``P`` with ``F = lr_ratio * P`` (a
``torch.nn.utils.parametrize`` parametrization; ``P`` starts at ``F0 / lr_ratio``). The gradient
reaching ``P`` is ``lr_ratio`` times the one reaching ``F``, so:

* Adam, AdamW and other scale-invariant optimizers move ``P`` by the same step they would give
  ``F`` and ``F`` moves ``lr_ratio`` times as far: LoRA+'s rule ``lr_F = lr_ratio * lr``, with no
  parameter groups, whatever the optimizer set-up (one group, a top-level LightningCLI
  ``optimizer:``, a scheduler...). It is exact up to Adam's ``eps`` (which acts on ``P``'s
  gradient, i.e. is ``lr_ratio`` times smaller relative to ``F``'s) and decoupled weight decay,
  which shrinks ``F`` by ``lr * wd * F`` per step (as for an unscaled factor), not by
  ``lr_ratio * lr * wd * F`` as a LoRA+ parameter group would.
* Plain SGD scales the step of ``P`` by ``lr_ratio`` too, so ``F`` moves ``lr_ratio ** 2`` as far
  (use ``lr_ratio = sqrt(lambda)`` there to get lambda).

State dicts store ``P`` under ``<layer>.parametrizations.<name>.original``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

__all__ = ["LrRatio", "apply_lr_ratio"]


class LrRatio(nn.Module):
    """Parametrization ``F = ratio * P``; assigning ``F`` stores ``P = F / ratio``."""

    def __init__(self, ratio: float) -> None:
        super().__init__()
        self.ratio = float(ratio)

    def forward(self, stored: torch.Tensor) -> torch.Tensor:
        return stored * self.ratio

    def right_inverse(self, value: torch.Tensor) -> torch.Tensor:
        return value / self.ratio

    def extra_repr(self) -> str:
        return f"ratio={self.ratio:g}"


def apply_lr_ratio(module: nn.Module, name: str, ratio: float) -> None:
    """Give ``module.<name>`` ``ratio`` times the learning rate under Adam-type optimizers.

    The parameter's current value is kept (the stored tensor becomes ``value / ratio``).
    """
    parametrize.register_parametrization(module, name, LrRatio(ratio))
