"""Every configs/methods/*.yaml fits any encoder width: no pinned factor shapes."""

from __future__ import annotations

import pytest
import torch
import yaml
from config_helpers import CONFIGS, METHOD_FILES

from terratorch_hsi_peft.adapters import adapter_layers, apply_peft
from terratorch_hsi_peft.backbones.factories import spectralgpt_vit_base


@pytest.mark.parametrize("width", [64, 768, 1024])
@pytest.mark.parametrize("method_file", METHOD_FILES, ids=lambda path: path.stem)
def test_method_file_applies_to_every_width(method_file, width):
    # One block at each width: spectralgpt_vit_base (768) and _large (1024) share their layers.
    torch.manual_seed(0)
    encoder = spectralgpt_vit_base(embed_dim=width, depth=1, num_heads=4, img_size=16)
    apply_peft(encoder, yaml.safe_load(method_file.read_text()))
    layers = adapter_layers(encoder)
    assert sorted(layers) == ["blocks.0.attn.q", "blocks.0.attn.v"]
    out = encoder(torch.randn(1, 12, 16, 16))[-1]
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["krona", "krona_plus"])
def test_automatic_krona_factors_are_the_papers_at_width_768(name):
    encoder = spectralgpt_vit_base(depth=1, img_size=16)
    apply_peft(encoder, yaml.safe_load((CONFIGS / "methods" / f"{name}.yaml").read_text()))
    layer = adapter_layers(encoder)["blocks.0.attn.q"]
    assert layer.krona_A.shape == (24, 24)
    assert layer.krona_B.shape == (32, 32)


def test_automatic_lokr_factor_is_the_papers_at_width_768():
    encoder = spectralgpt_vit_base(depth=1, img_size=16)
    apply_peft(encoder, yaml.safe_load((CONFIGS / "methods" / "lokr.yaml").read_text()))
    layer = adapter_layers(encoder)["blocks.0.attn.v"]
    assert layer.lokr_w1.shape == (24, 24)
    assert layer.lokr_w2_a.shape == (32, 8) and layer.lokr_w2_b.shape == (8, 32)
