"""LoRA+ / KronA+: with ONE param group, the lambda factor moves lambda times as far (AdamW, SGD).

Tolerance: the ratio is exact up to Adam's eps. After one step from the same state and gradient g,
the plain factor moves lr * g/(|g| + eps) and the "+" factor lr * lambda * g/(|g| + eps/lambda)
(plus weight decay, which scales with the factor, identically for both): the relative deviation from
lambda is at most eps/|g| per entry (eps = 1e-8), plus 1e-4 for float32 rounding of the moves.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from peft_helpers import peft_config, randomise_adapters
from torch.nn.utils import parametrize

from terratorch_hsi_peft.adapters import adapter_layers, apply_peft
from terratorch_hsi_peft.adapters import lr as lr_module
from terratorch_hsi_peft.adapters.lr import LrRatio, match_lr_ratio, register_update_rule

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


def train(toy_vit, method, kwargs, optimizer, state, steps=3, groups=None):
    """Effective factors after ``steps`` steps on fixed batches from the effective ``state``."""
    model = apply_peft(toy_vit(), peft_config(method, **kwargs))
    with torch.no_grad():
        for (name, f), value in state.items():
            layer = adapter_layers(model)[name]
            if parametrize.is_parametrized(layer, f):
                setattr(layer, f, value)  # stores value / lambda
            else:
                getattr(layer, f).copy_(value)
    opt = optimizer(groups(model) if groups else model.parameters())
    gen = torch.Generator().manual_seed(5)
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(4, 7, 48, generator=gen)).pow(2).sum().backward()
        opt.step()
    return factors(model)


def loraplus_groups(boosted: str, lr: float):
    """LoRA+'s reference: the lambda factor in its own parameter group with lr * lambda."""

    def groups(model):
        params = [p for p in model.parameters() if p.requires_grad]
        fast = [getattr(layer, boosted) for layer in adapter_layers(model).values()]
        rest = [p for p in params if all(p is not q for q in fast)]
        return [{"params": rest}, {"params": fast, "lr": LAMBDA * lr}]

    return groups


SGD_SETUPS = {
    "sgd": {},
    "sgd_momentum": {"momentum": 0.9},
    "sgd_nesterov": {"momentum": 0.9, "nesterov": True},
    "asgd": None,
}


@pytest.mark.parametrize("setup", SGD_SETUPS)
@pytest.mark.parametrize(("plain", "plus", "kwargs", "boosted", "other"), CASES)
def test_sgd_single_group_trains_like_loraplus_parameter_groups(
    plain, plus, kwargs, boosted, other, setup, toy_vit
):
    """Under SGD (any momentum) the "+" method with ONE group follows LoRA+'s two groups."""
    lr = 1e-3

    def opt(params):
        if setup == "asgd":
            return torch.optim.ASGD(params, lr=lr, lambd=0.0)  # lambd: a decay, not scaled
        return torch.optim.SGD(params, lr=lr, **SGD_SETUPS[setup])

    state = random_state(toy_vit, plain)
    reference = train(toy_vit, plain, {}, opt, state, groups=loraplus_groups(boosted, lr))
    single_group = train(toy_vit, plus, {"lr_ratio": LAMBDA, **kwargs}, opt, state)
    moved_reference = {k: v - state[k] for k, v in reference.items()}
    for key, moved in moved_reference.items():
        assert moved.abs().max() > 0
        torch.testing.assert_close(single_group[key] - state[key], moved, rtol=1e-4, atol=1e-7)


def test_adamw_several_steps_follow_loraplus_parameter_groups(toy_vit):
    """Three AdamW steps (no weight decay): the same trajectory as LoRA+'s groups, up to eps."""
    lr = 1e-3

    def opt(params):
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.0)

    state = random_state(toy_vit, "LORA")
    reference = train(toy_vit, "LORA", {}, opt, state, groups=loraplus_groups("lora_B", lr))
    single_group = train(toy_vit, "LORA_PLUS", {"lr_ratio": LAMBDA}, opt, state)
    for key, value in reference.items():
        torch.testing.assert_close(
            single_group[key] - state[key], value - state[key], rtol=1e-3, atol=1e-7
        )


def test_matching_the_optimizer_leaves_the_function_and_the_state_dict_unchanged(toy_vit):
    model = apply_peft(toy_vit(), peft_config("KRONA_PLUS", lr_ratio=LAMBDA))
    randomise_adapters(model)
    x = torch.randn(2, 7, 48)
    before, state = model(x).detach(), {k: v.clone() for k, v in model.state_dict().items()}
    assert match_lr_ratio(torch.optim.SGD(model.parameters(), lr=0.1)) == 4
    assert {lr.grad_scale for lr in lr_ratios(model)} == {1 / LAMBDA}
    assert torch.equal(model(x), before)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    match_lr_ratio(torch.optim.Adam(model.parameters()))  # back to the scale-invariant setting
    assert {lr.grad_scale for lr in lr_ratios(model)} == {1.0}


class HalfSGD(torch.optim.Optimizer):
    """An optimizer the library does not know (linear in the gradient, like SGD)."""

    def __init__(self, params, lr: float) -> None:
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-group["lr"])


def test_an_unknown_optimizer_warns_until_its_rule_is_registered(toy_vit, monkeypatch):
    monkeypatch.setattr(lr_module, "_RULES", dict(lr_module._RULES))  # undone after the test
    state = random_state(toy_vit, "LORA")

    def opt(params):
        return HalfSGD(params, lr=1e-2)

    with pytest.warns(UserWarning, match="cannot tell how HalfSGD scales"):
        unknown = train(toy_vit, "LORA_PLUS", {"lr_ratio": 4.0}, opt, state, steps=1)
    register_update_rule(HalfSGD, "linear")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        known = train(toy_vit, "LORA_PLUS", {"lr_ratio": 4.0}, opt, state, steps=1)
    plain = train(toy_vit, "LORA", {}, opt, state, steps=1)
    for (layer, f), value in plain.items():
        step = value - state[layer, f]
        factor = 4.0 if f == "lora_B" else 1.0
        torch.testing.assert_close(
            known[layer, f] - state[layer, f], factor * step, rtol=1e-4, atol=1e-7
        )
        factor = 16.0 if f == "lora_B" else 1.0  # what the warning says: lambda squared
        torch.testing.assert_close(
            unknown[layer, f] - state[layer, f], factor * step, rtol=1e-4, atol=1e-7
        )
    with pytest.raises(ValueError, match="'scale_invariant' or 'linear'"):
        register_update_rule(HalfSGD, "adam")


def lr_ratios(model) -> list[LrRatio]:
    return [m for m in model.modules() if isinstance(m, LrRatio)]


class DuckSGD:
    """An optimizer with torch-style ``param_groups`` that is not a ``torch.optim.Optimizer``, so
    torch's step pre-hooks (which match the lambda factors) never run for it."""

    def __init__(self, params, lr: float) -> None:
        self.param_groups = [{"params": list(params), "lr": lr}]

    def zero_grad(self) -> None:
        for p in self.param_groups[0]["params"]:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for p in self.param_groups[0]["params"]:
            if p.grad is not None:
                p.add_(p.grad, alpha=-self.param_groups[0]["lr"])


def duck_step(toy_vit, method, state, match=False):
    """(model, optimizer, effective factor moves) after one DuckSGD step from ``state``."""
    kwargs = {"lr_ratio": LAMBDA} if method == "LORA_PLUS" else {}
    model = apply_peft(toy_vit(), peft_config(method, **kwargs))
    with torch.no_grad():
        for (name, f), value in state.items():
            layer = adapter_layers(model)[name]
            if parametrize.is_parametrized(layer, f):
                setattr(layer, f, value)  # stores value / lambda
            else:
                getattr(layer, f).copy_(value)
    opt = DuckSGD([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    if match:
        assert match_lr_ratio(opt) == 4
    with torch.no_grad():  # reading the factors is no training forward
        before = factors(model)
    x = torch.randn(4, 7, 48, generator=torch.Generator().manual_seed(5))
    model(x).pow(2).sum().backward()
    opt.step()
    opt.zero_grad()
    with torch.no_grad():
        moved = {key: value - before[key] for key, value in factors(model).items()}
    return model, opt, moved


def test_a_duck_typed_optimizer_warns_with_the_ratio_and_the_fix(toy_vit, monkeypatch):
    """Issue 31: an optimizer outside torch.optim.Optimizer trained lambda at another ratio,
    silently. Measured: lambda squared (256 for 16) under SGD's rule; the warning says so, names
    the class and the fix, and the fix gives exactly lambda (16)."""
    monkeypatch.setattr(lr_module, "_RULES", dict(lr_module._RULES))  # undone after the test
    state = random_state(toy_vit, "LORA")
    _, _, plain = duck_step(toy_vit, "LORA", state)
    model, _, unmatched = duck_step(toy_vit, "LORA_PLUS", state)
    for key, step in plain.items():
        boost = LAMBDA**2 if key[1] == "lora_B" else 1.0
        torch.testing.assert_close(unmatched[key], boost * step, rtol=1e-4, atol=1e-7)
    with pytest.warns(UserWarning) as caught:
        model(torch.randn(2, 7, 48))  # the next training forward sees the unmatched step
    (message,) = [str(w.message) for w in caught]
    assert "DuckSGD is not a torch.optim.Optimizer" in message
    assert "4 lambda factor(s) (lr_ratio=16)" in message
    assert "16 times the others' if DuckSGD behaves like Adam" in message
    assert "256 times if like SGD" in message
    assert "register_update_rule(DuckSGD, 'scale_invariant' or 'linear')" in message
    assert "match_lr_ratio(optimizer)" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(torch.randn(2, 7, 48))  # once per optimizer

    register_update_rule(DuckSGD, "linear")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model, _, matched = duck_step(toy_vit, "LORA_PLUS", state, match=True)
        model(torch.randn(2, 7, 48))
    for key, step in plain.items():
        boost = LAMBDA if key[1] == "lora_B" else 1.0
        torch.testing.assert_close(matched[key], boost * step, rtol=1e-4, atol=1e-7)


def test_no_warning_without_an_optimizer_or_before_a_torch_optimizer_steps(toy_vit):
    """Loading other values between training forwards is no unmatched step."""
    model = apply_peft(toy_vit(), peft_config("LORA_PLUS", lr_ratio=LAMBDA))
    x = torch.randn(2, 7, 48)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(x)
        randomise_adapters(model)  # changes the stored tensors, no optimizer exists
        model(x)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        randomise_adapters(model)
        model(x).sum().backward()  # a torch optimizer holds them, matched on its first step
        opt.step()
        model(x)
    assert {lr.grad_scale for lr in lr_ratios(model)} == {1 / LAMBDA}
