"""LoHa, added as one module: parity with Hugging Face peft, merge, files, factory, benchmark."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml
from peft import LoHaConfig, inject_adapter_in_model
from peft_helpers import ToyViT, peft_config, randomise_adapters
from torch import nn

from terratorch_hsi_peft.adapters import (
    adapter_layers,
    apply_peft,
    load_adapters,
    merge_adapters,
    save_adapters,
    unmerge_adapters,
)
from terratorch_hsi_peft.adapters.config import PeftSpec
from terratorch_hsi_peft.adapters.methods.loha import LoHaLinear
from terratorch_hsi_peft.models import PEFTEncoderDecoderFactory

REPO_ROOT = Path(__file__).resolve().parents[2]
METHOD_FILE = REPO_ROOT / "configs" / "methods" / "loha.yaml"
FACTORS = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
#: A tiny SpectralGPT encoder with a classification head.
SPECTRALGPT_ARGS = {
    "backbone": "spectralgpt_vit_base",
    "backbone_num_bands": 6,
    "backbone_img_size": 16,
    "backbone_depth": 2,
    "backbone_embed_dim": 32,
    "backbone_num_heads": 2,
    "necks": [{"name": "AggregateTokens"}],
    "decoder": "IdentityDecoder",
    "num_classes": 3,
}


def twins(r: int, alpha: float) -> tuple[nn.Module, nn.Module, nn.Module]:
    """A float64 model, and copies with this library's LoHa and with peft's, equal factors."""
    torch.manual_seed(0)
    base = ToyViT(dim=48).double()
    ours = apply_peft(copy.deepcopy(base), peft_config("LOHA", r=r, alpha=alpha))
    randomise_adapters(ours)
    theirs = inject_adapter_in_model(
        LoHaConfig(r=r, alpha=alpha, target_modules=["attn.q", "attn.v"]), copy.deepcopy(base)
    )
    with torch.no_grad():
        for name, layer in adapter_layers(ours).items():
            peft_layer = theirs.get_submodule(name)
            for factor in FACTORS:
                getattr(peft_layer, factor)["default"].copy_(getattr(layer, factor))
    return base, ours, theirs


# r=3: the forward goes through the r**2 Khatri-Rao factors; r=12: through the dense update.
# alpha / r exact in float32: peft multiplies by torch.tensor(alpha / r), a float32 scalar.
@pytest.mark.parametrize(("r", "alpha"), [(3, 6.0), (12, 3.0)])
def test_forward_delta_weight_and_gradients_match_peft_in_float64(r, alpha):
    _, ours, theirs = twins(r, alpha)
    assert {layer._factored for layer in adapter_layers(ours).values()} == {r == 3}
    assert {layer.scaling for layer in adapter_layers(ours).values()} == {alpha / r}
    x = torch.randn(2, 7, 48, dtype=torch.float64)
    out, reference = ours(x), theirs(x)
    torch.testing.assert_close(out, reference, rtol=1e-12, atol=1e-12)
    out.square().sum().backward()
    reference.square().sum().backward()
    for name, layer in adapter_layers(ours).items():
        peft_layer = theirs.get_submodule(name)
        torch.testing.assert_close(
            layer.scaling * layer.delta_weight(),
            peft_layer.get_delta_weight("default"),
            rtol=1e-12,
            atol=1e-12,
        )
        for factor in FACTORS:
            torch.testing.assert_close(
                getattr(layer, factor).grad,
                getattr(peft_layer, factor)["default"].grad,
                rtol=1e-10,
                atol=1e-12,
            )


def test_initialisation_is_peft_s_and_leaves_the_output_unchanged():
    torch.manual_seed(0)
    base = ToyViT(dim=48).double()
    model = apply_peft(copy.deepcopy(base), peft_config("LOHA", r=4))
    layer = model.blocks[0].attn.q
    assert isinstance(layer, LoHaLinear) and layer.scaling == 8.0 / 4
    assert [tuple(getattr(layer, f).shape) for f in FACTORS] == [(48, 4), (4, 48)] * 2
    assert not layer.hada_w2_b.any() and all(getattr(layer, f).abs().sum() > 0 for f in FACTORS[:3])
    x = torch.randn(2, 7, 48, dtype=torch.float64)
    assert torch.equal(model(x), base(x))


def test_merge_and_unmerge_are_exact_in_float64():
    _, ours, _ = twins(3, 6.0)
    ours.eval()
    x = torch.randn(2, 7, 48, dtype=torch.float64)
    before = {n: p.clone() for n, p in ours.named_parameters() if "base_layer" in n}
    unmerged = ours(x)
    assert merge_adapters(ours) == 4
    torch.testing.assert_close(ours(x), unmerged, rtol=1e-12, atol=1e-12)
    assert unmerge_adapters(ours) == 4
    for name, value in ours.named_parameters():
        if name in before:
            torch.testing.assert_close(value, before[name], rtol=0, atol=1e-15)
    torch.testing.assert_close(ours(x), unmerged, rtol=0, atol=1e-15)


def test_save_and_load_reproduce_the_adapters(tmp_path):
    base, source, _ = twins(3, 6.0)
    path = save_adapters(source, tmp_path / "loha.safetensors")
    target = apply_peft(copy.deepcopy(base), peft_config("LOHA", r=3, alpha=6.0))
    x = torch.randn(2, 7, 48, dtype=torch.float64)
    assert torch.equal(target(x), base(x))  # fresh adapters: no update yet
    load_adapters(target, path)
    assert torch.equal(target(x), source(x))
    with pytest.raises(ValueError, match="method: file LOHA, model LORA"):
        load_adapters(apply_peft(copy.deepcopy(base), peft_config("LORA")), path)


def test_method_file_builds_loha_through_the_factory():
    peft = yaml.safe_load(METHOD_FILE.read_text())
    spec = PeftSpec.parse(peft)
    assert (spec.backend, spec.adapter.method.name, spec.adapter.options.r) == ("plugin", "LOHA", 4)
    torch.manual_seed(0)
    model = PEFTEncoderDecoderFactory().build_model(
        "classification", peft_config=peft, **SPECTRALGPT_ARGS
    )
    layers = adapter_layers(model.encoder)
    assert sorted(layers) == [f"blocks.{b}.attn.{m}" for b in range(2) for m in "qv"]
    assert all(isinstance(layer, LoHaLinear) for layer in layers.values())
    assert {n for n, p in model.encoder.named_parameters() if p.requires_grad} == {
        f"{name}.{factor}" for name in layers for factor in FACTORS
    }


def test_method_loha_without_backend_is_an_error_naming_both():
    """Before this module, ``method: LOHA`` meant Hugging Face peft's: it must not switch
    silently."""
    peft = {"method": "LOHA", "peft_config_kwargs": {"target_modules": ["attn.q", "attn.v"]}}
    with pytest.raises(
        ValueError,
        match=r"names two methods: the plugin's LOHA \(LoHaLinear\) and Hugging Face peft's "
        r"LOHA\. Add backend: plugin or backend: hf",
    ):
        PEFTEncoderDecoderFactory().build_model(
            "classification", peft_config=peft, **SPECTRALGPT_ARGS
        )
    torch.manual_seed(0)
    hf = PEFTEncoderDecoderFactory().build_model(
        "classification", peft_config={**peft, "backend": "hf"}, **SPECTRALGPT_ARGS
    )
    assert type(hf.encoder).__name__ == "PeftModel" and not adapter_layers(hf.encoder)
    assert any(".hada_w1_a." in n for n, p in hf.encoder.named_parameters() if p.requires_grad)
