"""Adapter forwards against independent dense float64 references and Hugging Face peft."""

from __future__ import annotations

import pytest
import torch
from peft import LoKrConfig, LoraConfig, inject_adapter_in_model
from peft.tuners.lokr.layer import factorization
from peft_helpers import ALL_METHODS, peft_config, randomise_adapters
from torch import nn

from terratorch_hsi_peft.adapters import apply_peft
from terratorch_hsi_peft.adapters.kron import near_sqrt_factors

D_IN, D_OUT = 48, 32


def adapted_linear(method: str, dtype=torch.float64, **kwargs) -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(D_IN, D_OUT)).to(dtype)
    return apply_peft(model, peft_config(method, targets=["0"], **kwargs))


def dense_reference(
    layer, method: str, x: torch.Tensor, r: int = 4, alpha: float = 8.0, scale: float = 1.0
) -> torch.Tensor:
    """``x @ (W0 + s dW).T + b`` in float64 from the layer's effective factors."""
    f = {
        name: getattr(layer, name).double()
        for name in ("lora_A", "lora_B", "krona_A", "krona_B", "lokr_w1", "lokr_w2_a", "lokr_w2_b")
        if hasattr(layer, name)
    }
    if method.startswith("LORA"):
        delta = f["lora_B"] @ f["lora_A"]
        scale = alpha / r
    elif method.startswith("KRONA"):
        delta = torch.kron(f["krona_A"], f["krona_B"])
    else:
        delta = torch.kron(f["lokr_w1"], f["lokr_w2_a"] @ f["lokr_w2_b"])
        scale = alpha / r
    weight = layer.base_layer.weight.double() + scale * delta
    return x.double() @ weight.T + layer.base_layer.bias.double()


CASES = [
    ("LORA", {"r": 4, "alpha": 12.0}),
    ("LORA_PLUS", {"r": 3, "alpha": 5.0, "lr_ratio": 4.0}),
    ("KRONA", {"a_shape": [4, 6], "scale": 2.5}),
    ("KRONA", {"zero_factor": "B"}),
    ("KRONA_PLUS", {"b_shape": [8, 4], "lr_ratio": 16.0}),
    ("KRONA_PLUS", {"lr_ratio_factor": "B", "zero_factor": "B", "lr_ratio": 3.0}),
    ("LOKR", {"r": 2, "alpha": 3.0}),
    ("LOKR", {"r": 1, "a_shape": [2, 3], "b_shape": [16, 16]}),
]


@pytest.mark.parametrize(("method", "kwargs"), CASES)
def test_forward_equals_dense_float64_reference(method, kwargs):
    model = adapted_linear(method, **kwargs)
    randomise_adapters(model)
    layer = model[0]
    x = torch.randn(3, 5, D_IN, dtype=torch.float64)
    hyper = {k: v for k, v in kwargs.items() if k in ("r", "alpha", "scale")}
    expected = dense_reference(layer, method, x, **hyper)
    torch.testing.assert_close(model(x), expected, rtol=1e-12, atol=1e-12)
    assert (model(x) - layer.base_layer(x)).abs().max() > 1e-3  # the adapter really contributes


@pytest.mark.parametrize("method", ALL_METHODS)
def test_output_unchanged_at_initialisation(method, toy_vit):
    model = toy_vit()
    x = torch.randn(2, 7, 48)
    before = model(x)
    apply_peft(model, peft_config(method, dropout=0.2))
    model.train()  # dropout active: the update is still exactly zero
    assert torch.equal(model(x), before)


def test_lr_ratio_factor_is_stored_divided():
    plain, plus = (
        adapted_linear("KRONA"),
        adapted_linear("KRONA_PLUS", lr_ratio=8.0, lr_ratio_factor="B"),
    )
    stored = plus[0].parametrizations.krona_B.original
    torch.testing.assert_close(plus[0].krona_B, plain[0].krona_B, rtol=1e-15, atol=0)
    torch.testing.assert_close(stored * 8.0, plain[0].krona_B, rtol=1e-15, atol=0)


@pytest.mark.parametrize("method", ["KRONA", "KRONA_PLUS", "LOKR"])
def test_kron_forward_never_builds_dense_update(method, monkeypatch):
    torch.manual_seed(0)
    model = apply_peft(nn.Sequential(nn.Linear(768, 768)), peft_config(method, targets=["0"]))
    randomise_adapters(model)
    x = torch.randn(4, 768)
    expected = x @ (model[0].base_layer.weight + model[0].scaling * model[0].delta_weight()).T
    expected = expected + model[0].base_layer.bias

    def no_kron(*args, **kwargs):
        raise AssertionError("torch.kron called in the training forward")

    monkeypatch.setattr(torch, "kron", no_kron)
    out = model(x)
    out.sum().backward()
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    assert model[0].adapter_parameters()  # gradients flowed without the dense form
    assert all(p.grad is not None for p in model[0].adapter_parameters().values())


@pytest.mark.parametrize("n", [1, 7, 12, 48, 64, 96, 128, 768, 1000, 3072])
def test_default_factors_match_peft_factorization(n):
    assert near_sqrt_factors(n) == factorization(n)


def test_lora_equals_hugging_face_peft():
    model = adapted_linear("LORA", r=4, alpha=12.0)
    randomise_adapters(model)
    reference = nn.Sequential(nn.Linear(D_IN, D_OUT)).double()
    reference = inject_adapter_in_model(
        LoraConfig(r=4, lora_alpha=12.0, target_modules=["0"]), reference
    )
    with torch.no_grad():
        ref = reference[0]
        ref.base_layer.load_state_dict(model[0].base_layer.state_dict())
        ref.lora_A["default"].weight.copy_(model[0].lora_A)
        ref.lora_B["default"].weight.copy_(model[0].lora_B)
    x = torch.randn(6, D_IN, dtype=torch.float64)
    torch.testing.assert_close(model(x), reference(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("r", "alpha"), [(2, 6.0), (3, 1.0)])
def test_lokr_equals_hugging_face_peft(r, alpha):
    model = adapted_linear("LOKR", r=r, alpha=alpha)
    randomise_adapters(model)
    reference = nn.Sequential(nn.Linear(D_IN, D_OUT)).double()
    reference = inject_adapter_in_model(
        LoKrConfig(r=r, alpha=alpha, target_modules=["0"]), reference
    )
    ref = reference[0]
    # peft chose the same factor shapes and the low-rank second factor
    assert ref.lokr_w1["default"].shape == model[0].lokr_w1.shape
    with torch.no_grad():
        ref.base_layer.load_state_dict(model[0].base_layer.state_dict())
        for name in ("lokr_w1", "lokr_w2_a", "lokr_w2_b"):
            getattr(ref, name)["default"].copy_(getattr(model[0], name))
    x = torch.randn(6, D_IN, dtype=torch.float64)
    torch.testing.assert_close(model(x), reference(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_bf16_autocast_on_cpu(method, toy_vit):
    model = apply_peft(toy_vit(), peft_config(method))
    randomise_adapters(model)
    x = torch.randn(2, 7, 48)
    full = model(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        assert model.blocks[0].attn.q(x).dtype == torch.bfloat16
    assert (out.float() - full).norm() / full.norm() < 2e-2  # bf16 rounding only
    out.float().sum().backward()
    for layer_params in (m.adapter_parameters() for m in model.modules() if hasattr(m, "merged")):
        for p in layer_params.values():
            assert p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32


@pytest.mark.parametrize("method", ALL_METHODS)
def test_bf16_base_weights_keep_float32_adapters(method, toy_vit):
    model = apply_peft(toy_vit().to(torch.bfloat16), peft_config(method))
    randomise_adapters(model)
    layer = model.blocks[0].attn.q
    assert layer.base_layer.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in layer.adapter_parameters().values())
    x = torch.randn(2, 7, 48, dtype=torch.bfloat16)
    out = layer(x)
    assert out.dtype == torch.bfloat16
    # The layer's own dense update in float64 (each method's is checked against an independent
    # reference above or in its own test file): only the bf16 rounding is measured here.
    weight = layer.base_layer.weight.double() + layer.scaling * layer.delta_weight().double()
    expected = x.double() @ weight.T + layer.base_layer.bias.double()
    torch.testing.assert_close(out.double(), expected, rtol=3e-2, atol=3e-2)


@pytest.mark.cuda
@pytest.mark.parametrize("method", ALL_METHODS)
def test_cuda_matches_cpu_and_runs_under_autocast(method, toy_vit):
    model = apply_peft(toy_vit(), peft_config(method))
    randomise_adapters(model)
    x = torch.randn(2, 7, 48)
    expected = model(x)
    model.cuda()
    out = model(x.cuda())
    torch.testing.assert_close(out.cpu(), expected, rtol=1e-4, atol=1e-4)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out16 = model(x.cuda())
        assert model.blocks[0].attn.q(x.cuda()).dtype == torch.bfloat16
    out16.float().sum().backward()
    assert (out16.float().cpu() - expected).norm() / expected.norm() < 2e-2


@pytest.mark.parametrize("method", ["LOKR", "KRONA"])
def test_kron_forward_costs_far_fewer_flops_than_peft_dense_lokr(method):
    """peft's LoKr forms the dense 768x768 update every call; the reshape trick does not."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    ours = apply_peft(nn.Sequential(nn.Linear(768, 768)), peft_config(method, ["0"]))
    reference = inject_adapter_in_model(
        LoKrConfig(r=4, alpha=8, target_modules=["0"]), nn.Sequential(nn.Linear(768, 768))
    )
    x = torch.randn(2, 64, 768)  # the paper's 64 tokens per patch

    def adapter_flops(model) -> int:
        with FlopCounterMode(display=False) as counter:
            model(x).sum().backward()
        return counter.get_total_flops()

    for model in (ours, reference):  # both frozen except their adapters
        assert not model[0].base_layer.weight.requires_grad
    base_flops = 2 * x.numel() * 768  # the frozen Linear's forward; x needs no gradient
    ours_extra = adapter_flops(ours) - base_flops
    peft_extra = adapter_flops(reference) - base_flops
    assert 0 < ours_extra < peft_extra / 5  # measured: about 11x fewer for 768x768
