"""Target matching, freezing, qkv splitting, and parameter counts against closed forms."""

from __future__ import annotations

import copy

import pytest
import torch
from peft_helpers import peft_config, randomise_adapters
from torch import nn

from terratorch_hsi_peft.adapters import (
    QKVSplit,
    adapter_layers,
    apply_peft,
    find_targets,
    save_adapters,
    trainable_parameter_report,
)


def test_targets_match_like_hugging_face_peft(toy_vit):
    model = toy_vit(depth=3)
    assert find_targets(model, ["attn.q", "v"]) == [
        f"blocks.{i}.attn.{m}" for i in range(3) for m in "qv"
    ]
    assert find_targets(model, ["fc2"]) == [f"blocks.{i}.mlp.fc2" for i in range(3)]
    assert find_targets(model, r"blocks\.[02]\.attn\.(q|proj)") == [
        "blocks.0.attn.q",
        "blocks.0.attn.proj",
        "blocks.2.attn.q",
        "blocks.2.attn.proj",
    ]
    assert find_targets(model, ["blocks.1.attn.k"]) == ["blocks.1.attn.k"]


def test_no_match_lists_linear_layers_and_non_linear_match_is_a_type_error(toy_vit):
    model = toy_vit()
    with pytest.raises(
        ValueError,
        match=r"'attn.query' matches no module .* attn.k, attn.proj, attn.q, attn.v, mlp.fc1",
    ):
        apply_peft(model, peft_config("LORA", targets=["attn.query"]))
    with pytest.raises(TypeError, match=r"not nn.Linear: blocks.0.attn \(ToyAttention\)"):
        apply_peft(model, peft_config("KRONA", targets=["attn"]))
    with pytest.raises(TypeError, match=r"blocks.0.norm \(LayerNorm\)"):
        apply_peft(model, peft_config("LOKR", targets=["norm"]))
    assert not adapter_layers(model)


def test_a_typo_in_one_entry_is_an_error_even_when_another_entry_matches(toy_vit):
    # issue 13 item 2: [attn.q, attn.value] used to adapt attn.q alone and train
    model = toy_vit(depth=3)
    before = repr(model)
    with pytest.raises(ValueError) as caught:
        apply_peft(model, peft_config("LORA", targets=["attn.q", "attn.value"]))
    message = str(caught.value)
    assert "target_modules entry 'attn.value' matches no module of ToyViT" in message
    assert "the other entries matched: 'attn.q' -> blocks.0.attn.q and 2 more" in message
    assert "attn.v, mlp.fc1, mlp.fc2" in message and "replace_qkv" not in message
    assert repr(model) == before and not adapter_layers(model)
    with pytest.raises(ValueError, match=r"matches no module .* are named .*: attn\.k"):
        find_targets(model, r"attn\.q")  # a regex must match the whole name
    with pytest.raises(ValueError, match=r"entry 'mlp\.fc3', 'attn\.key' matches no module"):
        find_targets(model, ["mlp.fc3", "attn.q", "attn.key"])


def test_a_target_missing_from_a_fused_qkv_model_hints_at_replace_qkv():
    model = nn.Sequential(FusedAttention(), FusedAttention())
    with pytest.raises(ValueError) as caught:
        apply_peft(model, peft_config("LORA", targets=["q_linear", "v_linear"]))
    message = str(caught.value)
    assert "entry 'q_linear', 'v_linear' matches no module" in message
    assert "fuses q, k and v into one Linear (0.qkv): set replace_qkv: qkv" in message
    # with the split, the same entries match
    apply_peft(
        model, {**peft_config("LORA", targets=["q_linear", "v_linear"]), "replace_qkv": "qkv"}
    )
    assert len(adapter_layers(model)) == 4


def test_only_adapters_train_and_a_second_apply_is_refused(toy_vit):
    model = apply_peft(toy_vit(), peft_config("LORA_PLUS"))
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable == sorted(
        f"blocks.{i}.attn.{m}.{name}"
        for i in range(2)
        for m in "qv"
        for name in ("lora_A", "parametrizations.lora_B.original")
    )
    assert copy.deepcopy(model).blocks[0].attn.q.lora_B.shape == (48, 4)
    with pytest.raises(ValueError, match="already has adapters"):
        apply_peft(model, peft_config("LORA"))


class FusedAttention(nn.Module):
    """timm-style attention with one fused qkv Linear."""

    def __init__(self, dim: int = 24, heads: int = 3) -> None:
        super().__init__()
        self.heads, self.qkv, self.proj = heads, nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


def test_replace_qkv_matches_terratorch_and_the_fused_output():
    from terratorch.models.peft_utils import QKVSep

    torch.manual_seed(0)
    model = nn.Sequential(FusedAttention(), FusedAttention())
    x = torch.randn(2, 5, 24)
    fused, expected = copy.deepcopy(model[0].qkv), model(x)
    config = peft_config("KRONA", targets=["qkv.q_linear", "qkv.v_linear"])
    apply_peft(model, {**config, "replace_qkv": "qkv"})
    assert isinstance(model[1].qkv, QKVSplit)
    assert torch.equal(model(x), expected)  # zero update at init, exact split
    split = model[0].qkv
    torch.testing.assert_close(split(x), QKVSep(fused)(x), rtol=0, atol=0)
    assert sorted(adapter_layers(model)) == [f"{i}.qkv.{m}_linear" for i in range(2) for m in "qv"]
    assert not split.k_linear.weight.requires_grad


def test_replace_qkv_errors():
    with pytest.raises(ValueError, match="replace_qkv='qkv' matches no module"):
        apply_peft(
            nn.Sequential(nn.Linear(4, 4)), {**peft_config("LORA", ["0"]), "replace_qkv": "qkv"}
        )
    model = nn.Sequential()
    model.qkv = nn.Conv1d(4, 12, 1)
    with pytest.raises(TypeError, match="matched qkv, a Conv1d"):
        apply_peft(model, {**peft_config("LORA", ["qkv"]), "replace_qkv": "qkv"})
    model = nn.Sequential()
    model.qkv = nn.Linear(4, 10)
    with pytest.raises(ValueError, match="out_features divisible by 3"):
        apply_peft(model, {**peft_config("LORA", ["qkv"]), "replace_qkv": "qkv"})


@pytest.mark.parametrize(
    ("method", "kwargs", "per_layer"),
    [
        ("LORA", {"r": 4}, {(48, 48): 4 * 96, (96, 48): 4 * 144}),
        ("LORA_PLUS", {"r": 2}, {(48, 48): 2 * 96, (96, 48): 2 * 144}),
        ("KRONA", {}, {(48, 48): 6 * 6 + 8 * 8, (96, 48): 8 * 6 + 12 * 8}),
        ("KRONA_PLUS", {"b_shape": [8, 8]}, {(48, 48): 36 + 64, (96, 48): 12 * 6 + 64}),
        ("LOKR", {"r": 3}, {(48, 48): 36 + 3 * 16, (96, 48): 48 + 3 * 20}),
    ],
)
def test_trainable_counts_equal_closed_forms(method, kwargs, per_layer, toy_vit, tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential()
    model.backbone = toy_vit(depth=3)
    model.head = nn.Linear(48, 10)
    backbone_size = sum(p.numel() for p in model.backbone.parameters())
    apply_peft(model.backbone, peft_config(method, ["attn.q", "attn.v", "fc1"], **kwargs))
    model.head.requires_grad_(True)
    randomise_adapters(model)
    adapters = 3 * (2 * per_layer[48, 48] + per_layer[96, 48])
    report = trainable_parameter_report(model, backbone=model.backbone, include=["head"])
    assert report.adapter == adapters
    assert report.trainable == adapters + 48 * 10 + 10
    assert report.backbone_total == backbone_size
    assert report.percent == pytest.approx(100 * report.trainable / backbone_size)
    path = save_adapters(model, tmp_path / "a.safetensors", include=["head"])
    assert report.adapter_file_bytes == path.stat().st_size
    assert f"{adapters:,}" in str(report) and "%" in str(report)
