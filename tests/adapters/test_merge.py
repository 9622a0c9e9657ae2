"""Merging folds s*dW into the base weight; unmerging restores it."""

from __future__ import annotations

import pytest
import torch
from peft_helpers import ALL_METHODS, peft_config, randomise_adapters
from torch import nn

from terratorch_hsi_peft.adapters import (
    adapter_layers,
    apply_peft,
    merge_adapters,
    unmerge_adapters,
)


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        n: layer.base_layer.weight.detach().clone() for n, layer in adapter_layers(model).items()
    }


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("method", ALL_METHODS)
def test_merge_then_unmerge(method, toy_vit):
    model = apply_peft(toy_vit(), peft_config(method, targets=["attn.q", "attn.v", "mlp.fc1"]))
    randomise_adapters(model)
    x = torch.randn(2, 7, 48)
    original, adapted = weights(model), model(x).detach()

    assert merge_adapters(model) == 6
    assert all(layer.merged for layer in adapter_layers(model).values())
    merged_weights = weights(model)
    assert rel_err(model(x).detach(), adapted) < 1e-5
    assert merge_adapters(model) == 0  # merging twice is a no-op
    assert all(torch.equal(merged_weights[n], w) for n, w in weights(model).items())

    assert unmerge_adapters(model) == 6
    for name, w in weights(model).items():
        torch.testing.assert_close(w, original[name], rtol=0, atol=1e-6)
    assert rel_err(model(x).detach(), adapted) < 1e-5
    assert unmerge_adapters(model) == 0


@pytest.mark.parametrize("method", ["LORA", "KRONA_PLUS", "LOKR"])
def test_merge_folds_the_dense_update_in_float64(method):
    torch.manual_seed(0)
    model = apply_peft(nn.Sequential(nn.Linear(48, 32)).double(), peft_config(method, ["0"]))
    randomise_adapters(model)
    layer = model[0]
    expected = layer.base_layer.weight.detach() + layer.scaling * layer.delta_weight().detach()
    merge_adapters(model)
    torch.testing.assert_close(layer.base_layer.weight.detach(), expected, rtol=1e-15, atol=0)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_merge_bf16_base_weights(method, toy_vit):
    model = apply_peft(toy_vit().to(torch.bfloat16), peft_config(method))
    randomise_adapters(model)
    x = torch.randn(2, 7, 48, dtype=torch.bfloat16)
    layer = model.blocks[0].attn.q
    original, adapted = layer.base_layer.weight.detach().clone(), layer(x).float()
    merge_adapters(model)
    assert layer.base_layer.weight.dtype == torch.bfloat16
    assert rel_err(layer(x).float(), adapted) < 2e-2
    unmerge_adapters(model)
    # bf16 keeps 8 significant bits: each of merge and unmerge rounds once
    bound = 2 * 2**-8 * (original.float().abs() + layer.scaling * layer.delta_weight().abs())
    assert ((layer.base_layer.weight.float() - original.float()).abs() <= bound + 1e-30).all()


def test_merge_without_adapters_is_an_error(toy_vit):
    with pytest.raises(ValueError, match="call apply_peft first"):
        merge_adapters(toy_vit())


@pytest.mark.parametrize("method", ["LORA", "KRONA_PLUS", "LOKR"])
def test_merge_refuses_nan_or_inf_adapters_and_merges_nothing(method, toy_vit):
    # issue 13 item 5: peft's safe_merge checks this; a NaN merged spoils the base for good
    model = apply_peft(toy_vit(), peft_config(method))
    randomise_adapters(model)
    original = weights(model)
    layer = model.blocks[1].attn.v
    name, factor = next(iter(layer.adapter_parameters().items()))
    with torch.no_grad():
        factor[0, 0] = float("nan")
    with pytest.raises(ValueError, match=rf"blocks\.1\.attn\.v\.{name} hold NaN or Inf.*nothing"):
        merge_adapters(model)
    assert not any(layer.merged for layer in adapter_layers(model).values())
    assert all(torch.equal(w, original[n]) for n, w in weights(model).items())
    with pytest.raises(ValueError, match=rf"blocks\.1\.attn\.v: adapter tensor\(s\) \['{name}'\]"):
        layer.merge()  # the layer's own merge checks too


def test_merge_that_would_overflow_is_undone(toy_vit):
    model = apply_peft(toy_vit().half(), peft_config("LORA"))
    randomise_adapters(model)
    original = weights(model)
    with torch.no_grad():
        model.blocks[1].attn.v.lora_B.fill_(1e6)  # finite float32 factors, dW beyond float16
    with pytest.raises(ValueError, match=r"blocks\.1\.attn\.v: .* NaN or Inf \(overflow in"):
        merge_adapters(model)
    assert not any(layer.merged for layer in adapter_layers(model).values())
    for name, w in weights(model).items():  # blocks.0 was merged, then undone
        torch.testing.assert_close(w, original[name], rtol=0, atol=1e-3)
