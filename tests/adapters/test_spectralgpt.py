"""The paper's set-up: KronA+ (A 24x24 kron B 32x32) on attn.q / attn.v of SpectralGPT-B."""

from __future__ import annotations

import pytest
import torch

from terratorch_hsi_peft.adapters import apply_peft, save_adapters, trainable_parameter_report
from terratorch_hsi_peft.backbones.factories import spectralgpt_vit_base

KRONA_PLUS_QV = {
    "method": "KRONA_PLUS",
    "replace_qkv": None,
    "peft_config_kwargs": {"target_modules": ["attn.q", "attn.v"], "a_shape": [24, 24]},
}


@pytest.mark.slow  # builds the 85.4M-parameter encoder (~12 s on 2 cores)
def test_spectralgpt_b_krona_plus_budget(tmp_path):
    torch.manual_seed(0)
    backbone = spectralgpt_vit_base(num_bands=12, img_size=128)
    size = sum(p.numel() for p in backbone.parameters())
    x = torch.randn(2, 12, 32, 32)
    with torch.no_grad():
        before = backbone(x)[-1]
    apply_peft(backbone, KRONA_PLUS_QV)

    report = trainable_parameter_report(backbone, base_model_name="spectralgpt_vit_base")
    assert report.trainable == report.adapter == 12 * 2 * (24 * 24 + 32 * 32) == 38_400
    assert report.backbone_total == size
    assert 0.04 < report.percent < 0.06  # about 0.05 % of the encoder
    path = tmp_path / "krona_plus.safetensors"
    save_adapters(backbone, path, base_model_name="spectralgpt_vit_base")
    assert path.stat().st_size == report.adapter_file_bytes < 250_000  # < 0.25 MB

    out = backbone(x)[-1]
    assert torch.equal(out, before)  # dW = 0 at initialisation
    out.square().mean().backward()
    assert {n for n, p in backbone.named_parameters() if p.grad is not None} == {
        n for n, p in backbone.named_parameters() if p.requires_grad
    }
