"""Lambda (``lr_ratio``) of LoRA+ and KronA+: a reparameterised factor matched to the optimizer.

The lambda factor ``F`` is stored as a trainable tensor ``P`` with ``F = lr_ratio * P`` (a
``torch.nn.utils.parametrize`` parametrization; ``P`` starts at ``F0 / lr_ratio``). The layer
computes with ``F`` only, so nothing below changes its output. What reaches ``P`` in backward is
``grad_scale * lr_ratio * dL/dF``, and ``grad_scale`` is set for the optimizer that steps ``P``:

* scale-invariant optimizers (Adam, AdamW, NAdam, RAdam, Adamax, Adagrad, RMSprop, SparseAdam):
  ``grad_scale = 1``. Their step does not depend on the gradient's scale, so ``P`` moves as an
  unscaled factor would and ``F`` ``lr_ratio`` times as far: LoRA+'s ``lr_F = lr_ratio * lr``.
  Exact up to ``eps``, which acts on ``P``'s gradient (``lr_ratio`` times larger than ``F``'s).
* gradient-linear optimizers (SGD, with or without momentum or Nesterov; ASGD):
  ``grad_scale = 1 / lr_ratio``. ``P`` gets ``dL/dF``, moves as ``F`` would, and ``F`` moves
  ``lr_ratio`` times as far. Exact.
* any other optimizer: ``grad_scale`` stays 1 and a warning names the optimizer (``F`` then
  moves ``lr_ratio`` times as far under a scale-invariant rule, ``lr_ratio ** 2`` times under a
  linear one). :func:`register_update_rule` declares its rule.

The choice is made on the first ``step()`` of each ``torch.optim.Optimizer`` holding a lambda
factor (a global step pre-hook, installed with the first lambda factor), so it sees the
optimizer actually built: TerraTorch's task-level ``optimizer``, a top-level LightningCLI
``optimizer:`` block, or a hand-written loop. Gradients already accumulated at that moment are
rescaled with it. An optimizer that is not a ``torch.optim.Optimizer`` never reaches the hook:
call :func:`match_lr_ratio` with it. If it is not called, the first training forward after such
an optimizer changed ``P`` warns, naming the optimizer (found through the garbage collector's
referrers of ``P``) and the ratios that can result.

Weight decay (and ASGD's ``lambd``) acts on ``P`` and is not multiplied by ``lr_ratio``:
AdamW's decoupled decay and SGD's L2 term both shrink ``F`` by ``lr * wd * F`` per step, as for
an unscaled factor (a LoRA+ parameter group would shrink it ``lr_ratio`` times as fast); Adam's
coupled L2 term is ``lr_ratio ** 2`` times weaker on ``F`` than in a LoRA+ group.

State dicts store ``P`` under ``<layer>.parametrizations.<name>.original``; ``grad_scale`` is not
stored (it is set again by the next optimizer).
"""

from __future__ import annotations

import gc
import warnings
import weakref
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.optim.optimizer import register_optimizer_step_pre_hook

__all__ = ["LrRatio", "apply_lr_ratio", "match_lr_ratio", "register_update_rule", "update_rule"]

UpdateRule = Literal["scale_invariant", "linear"]

_RULES: dict[type, UpdateRule] = {
    **dict.fromkeys(
        (
            torch.optim.Adam,
            torch.optim.AdamW,
            torch.optim.NAdam,
            torch.optim.RAdam,
            torch.optim.Adamax,
            torch.optim.Adagrad,
            torch.optim.RMSprop,
            torch.optim.SparseAdam,
        ),
        "scale_invariant",
    ),
    torch.optim.SGD: "linear",
    torch.optim.ASGD: "linear",
}
#: Attribute of a stored tensor ``P`` naming its :class:`LrRatio`.
_OWNER = "_terratorch_hsi_peft_lr_ratio"
#: Optimizers already matched, with their number of parameter groups then.
_MATCHED: weakref.WeakKeyDictionary[torch.optim.Optimizer, int] = weakref.WeakKeyDictionary()
_HOOK: list[Any] = []  # the pre-hook's handle, once installed


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``scale``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


class LrRatio(nn.Module):
    """Parametrization ``F = ratio * P``; assigning ``F`` stores ``P = F / ratio``.

    Attributes:
        ratio: lambda (``lr_ratio``).
        grad_scale: extra factor on ``P``'s gradient, set by :func:`match_lr_ratio` (1 until then).
        matched: whether an optimizer was matched (:func:`match_lr_ratio`) or the missing match
            was warned about.
    """

    def __init__(self, ratio: float) -> None:
        super().__init__()
        self.ratio = float(ratio)
        self.grad_scale = 1.0
        self.matched = False
        # ``P._version`` at the last training forward; forgotten when values are assigned or
        # loaded (no optimizer step), so only steps between training forwards count.
        self._version: int | None = None
        self.register_load_state_dict_pre_hook(_forget_version)

    def forward(self, stored: torch.Tensor) -> torch.Tensor:
        if getattr(stored, _OWNER, None) is not self:  # e.g. a deep copy of the model
            setattr(stored, _OWNER, self)
        if not self.matched and stored.requires_grad and torch.is_grad_enabled():
            self._check_matched(stored)
        if self.grad_scale != 1.0 and stored.requires_grad:
            stored = _ScaleGrad.apply(stored, self.grad_scale)
        return stored * self.ratio

    def right_inverse(self, value: torch.Tensor) -> torch.Tensor:
        self._version = None
        return value / self.ratio

    def _check_matched(self, stored: torch.Tensor) -> None:
        """Warn if ``stored`` changed since the last training forward while an optimizer that is
        not a ``torch.optim.Optimizer`` (unseen by the step pre-hook) holds it unmatched."""
        version = stored._version
        changed = self._version is not None and version != self._version
        self._version = version
        if not changed:
            return
        # Only an optimizer the pre-hook cannot see is reported: a torch optimizer is matched on
        # its first step, and a change with no optimizer at all (load_state_dict) is no step.
        optimizer = _optimizer_holding(stored)
        if optimizer is None or isinstance(optimizer, torch.optim.Optimizer):
            return
        factors = _factors(optimizer)
        for _, lr_ratio in factors:
            lr_ratio.matched = True  # one warning per optimizer
        name = type(optimizer).__name__
        rule = update_rule(optimizer)
        known = f" (its registered rule: {rule})" if rule else ""
        r = self.ratio
        warnings.warn(
            f"terratorch_hsi_peft: {name}{known} is not a torch.optim.Optimizer and "
            f"match_lr_ratio was not called with it, so its {len(factors)} lambda factor(s) "
            f"(lr_ratio={r:g}) are not matched to it: their learning rate is {r:g} times the "
            f"others' if {name} behaves like Adam (scale-invariant), {r * r:g} times if like SGD "
            "(linear), and neither if its step depends on the parameter's size (a relative step, "
            "as Adafactor's). Right after building the optimizer, call "
            f"terratorch_hsi_peft.adapters.lr.register_update_rule({name}, 'scale_invariant' or "
            "'linear') and then match_lr_ratio(optimizer).",
            UserWarning,
            stacklevel=2,
        )


def _forget_version(lr_ratio: LrRatio, *_: Any) -> None:
    lr_ratio._version = None


def apply_lr_ratio(module: nn.Module, name: str, ratio: float) -> None:
    """Give ``module.<name>`` ``ratio`` times the learning rate of the other parameters.

    The parameter's current value is kept (the stored tensor becomes ``value / ratio``); the
    gradient of the stored tensor is matched to the optimizer on its first step (module
    docstring).
    """
    lr_ratio = LrRatio(ratio)
    parametrize.register_parametrization(module, name, lr_ratio)
    setattr(module.parametrizations[name].original, _OWNER, lr_ratio)
    if not _HOOK:
        _HOOK.append(register_optimizer_step_pre_hook(_match_on_step))


def register_update_rule(optimizer_class: type, rule: UpdateRule) -> None:
    """Declare how ``optimizer_class`` (and its subclasses) scale their update with the gradient.

    Args:
        optimizer_class: an optimizer class.
        rule: ``"scale_invariant"`` (the step does not change when the gradient is multiplied by a
            constant, as Adam's) or ``"linear"`` (the step is proportional to it, as SGD's).
    """
    if rule not in ("scale_invariant", "linear"):
        raise ValueError(f"rule must be 'scale_invariant' or 'linear', got {rule!r}.")
    if not isinstance(optimizer_class, type):
        raise TypeError(f"optimizer_class must be a class, got {optimizer_class!r}.")
    _RULES[optimizer_class] = rule


def update_rule(optimizer: Any) -> UpdateRule | None:
    """The update rule of ``optimizer``'s class (or nearest registered base), None if unknown."""
    for cls in type(optimizer).__mro__:
        if cls in _RULES:
            return _RULES[cls]
    return None


def match_lr_ratio(optimizer: Any) -> int:
    """Set the gradient scale of every lambda factor ``optimizer`` steps to its update rule.

    Gradients already accumulated on those factors are rescaled to match. Called automatically
    on the first step of a ``torch.optim.Optimizer``; call it yourself for other optimizers.

    Args:
        optimizer: any object with torch-style ``param_groups``.

    Returns:
        The number of lambda factors found.
    """
    factors = _factors(optimizer)
    if not factors:
        return 0
    for _, lr_ratio in factors:
        lr_ratio.matched = True
    rule = update_rule(optimizer)
    if rule is None:
        warnings.warn(
            f"terratorch_hsi_peft: cannot tell how {type(optimizer).__name__} scales its update "
            f"with the gradient, so the {len(factors)} lambda factors (lr_ratio) it trains keep "
            "the scale-invariant setting: their learning rate is lr_ratio times the others' if "
            f"{type(optimizer).__name__} behaves like Adam, lr_ratio**2 times if like SGD. Call "
            "terratorch_hsi_peft.adapters.lr.register_update_rule(<optimizer class>, "
            "'scale_invariant' or 'linear') before training to make it exact.",
            stacklevel=2,
        )
        return len(factors)
    for p, lr_ratio in factors:
        new = 1.0 if rule == "scale_invariant" else 1.0 / lr_ratio.ratio
        if new != lr_ratio.grad_scale:
            if p.grad is not None:
                p.grad.mul_(new / lr_ratio.grad_scale)
            lr_ratio.grad_scale = new
    return len(factors)


def _factors(optimizer: Any) -> list[tuple[torch.Tensor, LrRatio]]:
    """The stored lambda factors ``optimizer`` steps, with their :class:`LrRatio`."""
    return [
        (p, getattr(p, _OWNER))
        for group in optimizer.param_groups
        for p in group["params"]
        if isinstance(getattr(p, _OWNER, None), LrRatio)
    ]


def _optimizer_holding(stored: torch.Tensor, depth: int = 5) -> Any | None:
    """An object with torch-style ``param_groups`` holding ``stored``, found by walking the
    garbage collector's referrers up through containers (group list, group dict, param_groups
    list, instance dict); None if there is none. Slow (a heap scan per level): used only to name
    the optimizer in a warning."""
    level: list[Any] = [stored]
    seen = {id(stored)}
    for _ in range(depth):
        found = []
        for obj in level:
            for ref in gc.get_referrers(obj):
                if id(ref) in seen or ref is level or ref is found:
                    continue
                seen.add(id(ref))
                groups = getattr(ref, "param_groups", None)
                if isinstance(groups, list) and any(
                    isinstance(g, dict) and any(p is stored for p in g.get("params", ()))
                    for g in groups
                ):
                    return ref
                if isinstance(ref, (list, dict, tuple)):
                    found.append(ref)
        level = found
    return None


def _match_on_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    groups = len(optimizer.param_groups)
    if _MATCHED.get(optimizer) != groups:
        _MATCHED[optimizer] = groups
        with torch.no_grad():
            match_lr_ratio(optimizer)
