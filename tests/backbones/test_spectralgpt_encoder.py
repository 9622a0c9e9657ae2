"""The SpectralGPT encoder: faithful to the official forward, any band count, clear errors."""

from __future__ import annotations

import warnings

import pytest
import torch
from einops import rearrange
from spectralgpt_reference import bicubic_table, official_forward
from terratorch.models.necks import AggregateTokens, ReshapeTokensToImage, SelectIndices
from terratorch.registry import BACKBONE_REGISTRY

from terratorch_hsi_peft.backbones import SpectralGPTEncoder, factories, spectralgpt_vit_base

TINY = {"embed_dim": 24, "depth": 2, "num_heads": 2}


def tiny(**kwargs) -> SpectralGPTEncoder:
    return spectralgpt_vit_base(**{**TINY, "img_size": 32, **kwargs})


def randomise(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial values everywhere (the init zeroes biases and sets LayerNorms to identity)."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(0.2 * torch.randn(param.shape, generator=gen))
    return model


def test_vit_base_parameter_count_matches_official_encoder():
    dim, depth, bands, size, patch, t_patch = 768, 12, 12, 128, 8, 3
    tokens_spatial, groups = (size // patch) ** 2, bands // t_patch
    patch_embed = dim * 1 * t_patch * patch * patch + dim
    pos = tokens_spatial * dim + groups * dim
    linear = dim * dim + dim  # q, k, v and proj each
    block = 2 * (2 * dim) + 4 * linear + (dim * 4 * dim + 4 * dim) + (4 * dim * dim + dim)
    expected = patch_embed + pos + depth * block + 2 * dim
    assert expected == 85_403_904
    model = spectralgpt_vit_base()
    assert sum(p.numel() for p in model.parameters()) == expected
    assert isinstance(model.patch_size, int) and model.patch_size == 8
    attn = model.blocks[0].attn
    assert all(isinstance(getattr(attn, n), torch.nn.Linear) for n in ("q", "k", "v", "proj"))
    assert model.blocks[0].norm1.eps == 1e-6 and model.norm.eps == 1e-6


@pytest.mark.parametrize(
    ("name", "width", "depth", "heads"),
    [("spectralgpt_vit_large", 1024, 24, 16), ("spectralgpt_vit_huge", 1280, 32, 16)],
)
def test_large_and_huge_have_official_shapes(monkeypatch, name, width, depth, heads):
    built = BACKBONE_REGISTRY.build(name, depth=1, img_size=16)  # one block keeps it small
    assert built.embed_dim == width and built.blocks[0].attn.num_heads == heads
    assert built.blocks[0].mlp.fc1.out_features == 4 * width and len(built.blocks) == 1
    # the full-depth defaults, without allocating hundreds of millions of parameters
    monkeypatch.setattr(factories, "SpectralGPTEncoder", lambda **options: options)
    options = BACKBONE_REGISTRY.build(name)
    assert (options["embed_dim"], options["depth"], options["num_heads"]) == (width, depth, heads)
    assert (options["num_bands"], options["img_size"], options["patch_size"]) == (12, 128, 8)


@pytest.mark.parametrize("bands", [12, 103, 200, 224])
@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("fusion", ["mean", "concat", "learned"])
def test_output_shapes_any_band_count(bands, size, fusion):
    model = tiny(num_bands=bands, img_size=size, group_fusion=fusion, out_indices=[0, -1])
    groups = -(-bands // 3)
    assert model.num_groups == groups and model.band_padding == groups * 3 - bands
    features = model(torch.randn(2, bands, size, size))
    h = size // 8
    tokens = groups * h * h if fusion == "concat" else h * h
    width = 24 * groups if fusion == "concat" else 24
    assert [f.shape for f in features] == [(2, 1 + tokens, 24)] * 2  # leading token first
    assert model.out_channels == [width, width]
    images = model.prepare_features_for_image_model(features)
    assert [i.shape for i in images] == [(2, width, h, h)] * 2


def test_matches_official_forward_all_fusions():
    model = tiny(num_bands=12, out_indices=[0, 1], group_fusion="learned", cls_token=False)
    model = randomise(model).double()
    x = torch.randn(2, 12, 32, 32, dtype=torch.float64)
    sd = model.state_dict()
    blocks, final = official_forward(sd, x, depth=2, num_heads=2)
    reference = [blocks[0], final]  # the final norm belongs to the last layer
    for fusion in ("concat", "mean", "learned"):
        model.group_fusion = fusion
        out = model(x)
        for position, tokens in enumerate(reference):
            grouped = rearrange(tokens, "n (t l) c -> n t l c", t=4)
            if fusion == "concat":
                expected = tokens
            elif fusion == "mean":
                expected = grouped.mean(1)
            else:  # the original segmentation model: Linear(groups, 1) over (n, l, c, t)
                layer = model.fusion_layers[position]
                expected = torch.nn.functional.linear(
                    grouped.permute(0, 2, 3, 1),
                    sd[f"fusion_layers.{position}.weight"],
                    sd[f"fusion_layers.{position}.bias"],
                ).squeeze(-1)
                assert layer.weight.shape == (1, 4)
            torch.testing.assert_close(out[position], expected, rtol=1e-10, atol=1e-10)


def test_learned_fusion_starts_as_mean_and_is_listed_for_adapters():
    model = tiny(group_fusion="learned")
    assert model.trainable_with_adapters == ["fusion_layers"]
    assert any(n.startswith("fusion_layers.") for n, _ in model.named_parameters())
    mean = tiny(group_fusion="mean")
    mean.load_state_dict(model.state_dict(), strict=False)
    x = torch.randn(1, 12, 32, 32)
    for a, b in zip(model(x), mean(x), strict=True):
        torch.testing.assert_close(a, b)
    assert mean.trainable_with_adapters == []


def test_partial_last_group_is_zero_padded():
    model = tiny(num_bands=200, out_indices=[-1], group_fusion="concat", cls_token=False)
    model = randomise(model).double()
    assert model.num_groups == 67 and model.band_padding == 1
    x = torch.randn(1, 200, 32, 32, dtype=torch.float64)
    padded = torch.cat([x, torch.zeros(1, 1, 32, 32, dtype=torch.float64)], dim=1)
    _, final = official_forward(model.state_dict(), padded, depth=2, num_heads=2)
    torch.testing.assert_close(model(x)[0], final, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(model(x.unsqueeze(1))[0], final, rtol=1e-10, atol=1e-10)


def test_other_input_size_resizes_spatial_table_bicubically():
    model = tiny(num_bands=12, out_indices=[-1], group_fusion="concat", cls_token=False)
    model = randomise(model).double()
    x = torch.randn(1, 12, 48, 64, dtype=torch.float64)  # 6x8 grid on a 4x4-native model
    sd = dict(model.state_dict())
    sd["pos_embed_spatial"] = bicubic_table(sd["pos_embed_spatial"], 4, (6, 8))
    _, final = official_forward(sd, x, depth=2, num_heads=2)
    features = model(x)
    torch.testing.assert_close(features[0], final, rtol=1e-9, atol=1e-9)
    image = model.prepare_features_for_image_model(features)[0]
    assert image.shape == (1, 24 * 4, 6, 8)


@pytest.mark.parametrize("cls_token", [True, False])
@pytest.mark.parametrize("fusion", ["concat", "mean"])
def test_prepare_features_agrees_with_terratorch_neck(fusion, cls_token):
    """With the leading token, ReshapeTokensToImage works with its defaults and warns nothing;
    without it, with remove_cls_token: false."""
    model = tiny(num_bands=9, group_fusion=fusion, cls_token=cls_token)
    features = model(torch.randn(2, 9, 40, 32))  # not square: no guessing from the token count
    time_dim = model.num_groups if fusion == "concat" else 1
    neck = ReshapeTokensToImage(
        model.out_channels, remove_cls_token=cls_token, effective_time_dim=time_dim
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        images = neck(features, image_size=(40, 32))
    for ours, theirs in zip(model.prepare_features_for_image_model(features), images, strict=True):
        assert ours.shape == (2, model.out_channels[0], 5, 4)
        torch.testing.assert_close(ours, theirs)


def test_the_grid_travels_with_the_features_not_on_the_encoder():
    """Features of an earlier input reshape with their own grid after another forward call."""
    model = tiny(num_bands=9, group_fusion="concat", out_indices=[-1])
    attributes = dict(vars(model))
    tall = model(torch.randn(1, 9, 40, 32))
    wide = model(torch.randn(1, 9, 32, 40))
    assert (tall.grid, wide.grid) == ((5, 4), (4, 5))
    assert model.prepare_features_for_image_model(tall)[0].shape == (1, 24 * 3, 5, 4)
    assert model.prepare_features_for_image_model(wide)[0].shape == (1, 24 * 3, 4, 5)
    assert vars(model).keys() == attributes.keys()  # forward set nothing on the encoder
    assert all(vars(model)[name] is value for name, value in attributes.items())
    plain = list(tall)  # the grid is lost: a clear error, or the grid given explicitly
    with pytest.raises(ValueError, match=r"needs the token grid.*grid=\(height // patch_size"):
        model.prepare_features_for_image_model(plain)
    torch.testing.assert_close(
        model.prepare_features_for_image_model(plain, grid=(5, 4))[0],
        model.prepare_features_for_image_model(tall)[0],
    )
    with pytest.raises(ValueError, match=r"60 tokens per feature do not fill a 4x4 grid of 3"):
        model.prepare_features_for_image_model(tall, grid=(4, 4))


def test_leading_token_is_the_mean_so_aggregate_tokens_pools_the_patch_tokens():
    model = randomise(tiny(num_bands=12)).double()
    x = torch.randn(2, 12, 32, 32, dtype=torch.float64)
    features = model(x)
    patches = tiny(num_bands=12, cls_token=False)
    patches.load_state_dict(model.state_dict())
    for with_token, without in zip(features, patches.double()(x), strict=True):
        torch.testing.assert_close(with_token[:, 1:], without)
        torch.testing.assert_close(with_token[:, 0], without.mean(dim=1))
    for pooling in ("mean", "CLS"):
        (pooled,) = AggregateTokens(model.out_channels, pooling=pooling)(features)
        torch.testing.assert_close(pooled, features[-1][:, 1:].mean(dim=1))


def test_every_layer_by_default_as_terratorch_vits():
    model = tiny(depth=3)
    assert model.out_indices == [0, 1, 2] and len(model.out_channels) == 3
    features = model(torch.randn(1, 12, 32, 32))
    assert len(features) == 3
    # TerraTorch's usual ViT neck chain picks layers by index, as on Prithvi
    assert len(SelectIndices(model.out_channels, indices=[0, 2])(features)) == 2


def test_out_indices_and_cls_token_validation():
    assert tiny(out_indices=[-1, 0]).out_indices == [1, 0]
    with pytest.raises(ValueError, match="cls_token must be true or false"):
        tiny(cls_token="yes")
    for bad in ([2], [-3], [0.5], [], 1):
        with pytest.raises(ValueError, match="out_indices"):
            tiny(out_indices=bad)


def test_only_blocks_up_to_the_deepest_selected_layer_run():
    model = tiny(depth=3, out_indices=[0])
    model(torch.randn(1, 12, 32, 32)).pop().sum().backward()
    assert model.blocks[0].attn.q.weight.grad is not None
    assert model.blocks[2].attn.q.weight.grad is None


def test_wrong_band_count_names_num_bands():
    model = tiny(num_bands=12)
    with pytest.raises(ValueError, match=r"13 bands.*num_bands=12.*num_bands=13"):
        model(torch.randn(1, 13, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, bands, H, W\)"):
        model(torch.randn(1, 2, 12, 32, 32))


def test_size_not_divisible_by_patch_names_the_fix():
    with pytest.raises(ValueError, match=r"30x32 is not divisible by patch_size=8.*multiple of 8"):
        tiny()(torch.randn(1, 12, 30, 32))
    with pytest.raises(ValueError, match=r"img_size=30 is not divisible by patch_size=8"):
        tiny(img_size=30)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_bands": 0}, "num_bands must be a positive int"),
        ({"embed_dim": 25}, "not divisible by num_heads"),
        ({"group_fusion": "max"}, "group_fusion='max' is not one of"),
        ({"pretraind": True}, r"unknown argument\(s\) \['pretraind'\]. Valid arguments"),
    ],
)
def test_bad_configuration_is_a_clear_error(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        tiny(**kwargs)


def test_registered_names_build_through_terratorch():
    model = BACKBONE_REGISTRY.build("spectralgpt_vit_base", **TINY, img_size=32, num_bands=5)
    assert isinstance(model, SpectralGPTEncoder) and model.num_groups == 2
    with pytest.raises(ValueError, match="No pretrained weights were released"):
        BACKBONE_REGISTRY.build("spectralgpt_vit_large", pretrained=True, depth=1)


def test_string_values_from_cli_overrides_are_read_as_yaml(monkeypatch):
    # A dotted CLI override reaches the factory as a string; "false" must not load weights.
    monkeypatch.setattr(factories, "load_checkpoint", pytest.fail)
    typed = tiny(num_bands=5, pretrained=False, mlp_ratio=2.0, drop_path_rate=0.0)
    strings = spectralgpt_vit_base(
        embed_dim="24", depth="2", num_heads="2", img_size="32", num_bands="5",
        pretrained="false", ckpt_path="null", mlp_ratio="2.0", drop_path_rate="0",
    )  # fmt: skip
    assert str(strings) == str(typed)
    assert (strings.num_bands, strings.img_size, len(strings.blocks)) == (5, 32, 2)


def test_bf16_autocast_cpu_is_finite():
    model = tiny(num_bands=20, group_fusion="learned")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features = model(torch.randn(2, 20, 32, 32))
    assert all(torch.isfinite(f.float()).all() for f in features)
    assert features[-1].dtype in (torch.bfloat16, torch.float32)


@pytest.mark.cuda
def test_cuda_forward_backward_and_bf16():
    model = tiny(num_bands=20, img_size=32, group_fusion="learned").cuda()
    x = torch.randn(2, 20, 64, 48, device="cuda")  # off-native size: table resized on device
    with torch.autocast("cuda", dtype=torch.bfloat16):
        features = model(x)
        loss = sum(f.float().square().mean() for f in features)
    loss.backward()
    assert all(f.device.type == "cuda" and torch.isfinite(f.float()).all() for f in features)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
