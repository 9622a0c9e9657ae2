"""LoRA+ / KronA+: with ONE AdamW param group, the lambda factor moves lambda times as far.

Tolerance: the ratio is exact up to Adam's eps. After one step from the same state and gradient g,
the plain factor moves lr * g/(|g| + eps) and the "+" factor lr * lambda * g/(|g| + eps/lambda)
(plus weight decay, which scales with the factor, identically for both): the relative deviation from
lambda is at most eps/|g| per entry (eps = 1e-8), plus 1e-4 for float32 rounding of the moves.
"""

from __future__ import annotations

import pytest
import torch
from conftest import peft_config, randomise_adapters
from torch.nn.utils import parametrize

from terratorch_hsi_peft.peft import adapter_layers, apply_peft

LAMBDA = 16.0
EPS = 1e-8  # AdamW's default eps
CASES = [  # plain method, "+" method, extra kwargs, the lambda factor, the other factor
    ("LORA", "LORA_PLUS", {}, "lora_B", "lora_A"),
    ("KRONA", "KRONA_PLUS", {}, "krona_A", "krona_B"),
    ("KRONA", "KRONA_PLUS", {"lr_ratio_factor": "B"}, "krona_B", "krona_A"),
]


FACTORS = ("lora_A", "lora_B", "krona_A", "krona_B")


def factors(model) -> dict[tuple[str, str], torch.Tensor]:
    """Effective factor values (lambda * stored tensor for the lambda factor)."""
    return {
        (name, f): getattr(layer, f).detach().clone()
        for name, layer in adapter_layers(model).items()
        for f in FACTORS
        if hasattr(layer, f)
    }


def one_step(toy_vit, method, kwargs, optimizer, state=None):
    """Factor moves after one optimizer step; ``state``: effective factor values to start from."""
    model = apply_peft(toy_vit(), peft_config(method, **kwargs))
    with torch.no_grad():
        for (name, f), value in (state or {}).items():
            layer = adapter_layers(model)[name]
            if parametrize.is_parametrized(layer, f):
                setattr(layer, f, value)  # stores value / lambda
            else:
                getattr(layer, f).copy_(value)
    opt = optimizer(model.parameters())
    assert len(opt.param_groups) == 1  # ONE group holding every parameter
    before = factors(model)
    torch.manual_seed(123)
    model(torch.randn(4, 7, 48)).pow(2).sum().backward()  # |g| >> eps
    grads = {
        (name, f): getattr(layer, f).grad
        for name, layer in adapter_layers(model).items()
        for f in FACTORS
        if hasattr(layer, f) and not parametrize.is_parametrized(layer, f)
    }
    opt.step()
    return {key: value - before[key] for key, value in factors(model).items()}, grads


def random_state(toy_vit, method):
    model = apply_peft(toy_vit(), peft_config(method))
    randomise_adapters(model)
    return factors(model)


def adamw(weight_decay: float):
    return lambda params: torch.optim.AdamW(params, lr=1e-3, weight_decay=weight_decay)


# From the zero init (A = 0) KronA's B has no gradient yet: that case is the weight-decay test.
STARTS = [(False, 0.01), (True, 0.0), (True, 0.01)]  # (random start state?, weight decay)
ADAMW_CASES = [
    (*case, *start) for case in CASES for start in STARTS if start[0] or case[3] != "krona_B"
]


@pytest.mark.parametrize(
    ("plain", "plus", "kwargs", "boosted", "other", "randomise", "weight_decay"), ADAMW_CASES
)
def test_adamw_single_group_moves_lambda_factor_lambda_times(
    plain, plus, kwargs, boosted, other, randomise, weight_decay, toy_vit
):
    def opt(params):
        return torch.optim.AdamW(params, lr=1e-3, weight_decay=weight_decay)

    state = random_state(toy_vit, plain) if randomise else None  # else: the zero initialisation
    moved_plain, grads = one_step(toy_vit, plain, {}, opt, state)
    moved_plus, _ = one_step(toy_vit, plus, {"lr_ratio": LAMBDA, **kwargs}, opt, state)
    before = state or {}
    for (layer, f), step in moved_plain.items():
        if f == other:
            torch.testing.assert_close(moved_plus[layer, f], step, rtol=1e-4, atol=1e-7)
            continue
        assert f == boosted
        # Adam's part of the step is lambda times larger; decoupled decay -lr*wd*F is the same.
        decay = -1e-3 * weight_decay * before.get((layer, f), torch.zeros_like(step))
        ratio = (moved_plus[layer, f] - decay) / (step - decay)
        bound = EPS / grads[layer, f].abs() + 1e-4  # eps, plus float32 rounding of the moves
        assert ((ratio / LAMBDA - 1).abs() <= bound).all()
        assert ((ratio / LAMBDA - 1).abs() < 1e-4).float().mean() > 0.9  # most entries: < 1e-4


def test_weight_decay_shrinks_lambda_factor_like_an_unscaled_factor(toy_vit):
    """Documented difference from LoRA+ parameter groups: decay is lr * wd * F, not lambda times."""

    def opt(params):
        return torch.optim.AdamW(params, lr=1e-3, weight_decay=0.1)

    kwargs = {"lr_ratio": LAMBDA, "lr_ratio_factor": "B"}
    moved_plain, _ = one_step(toy_vit, "KRONA", {}, opt)  # zero init: B gets no gradient yet
    moved_plus, _ = one_step(toy_vit, "KRONA_PLUS", kwargs, opt)
    initial = factors(apply_peft(toy_vit(), peft_config("KRONA")))
    for key, step in moved_plain.items():
        torch.testing.assert_close(moved_plus[key], step, rtol=1e-4, atol=1e-7)
        if key[1] == "krona_B":
            torch.testing.assert_close(step, -1e-4 * initial[key], rtol=1e-4, atol=1e-7)


def test_sgd_gives_lambda_squared(toy_vit):
    """Documented behaviour: plain SGD sees the gradient scaled by lambda as well."""

    def sgd(params):
        return torch.optim.SGD(params, lr=1e-2)

    state = random_state(toy_vit, "LORA")
    moved_plain, _ = one_step(toy_vit, "LORA", {}, sgd, state)
    moved_plus, _ = one_step(toy_vit, "LORA_PLUS", {"lr_ratio": 4.0}, sgd, state)
    for (layer, f), step in moved_plain.items():
        expected = 16.0 * step if f == "lora_B" else step
        torch.testing.assert_close(moved_plus[layer, f], expected, rtol=1e-4, atol=1e-7)
