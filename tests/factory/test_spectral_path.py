"""model_args.spectral_path: a per-pixel spectral path to the head of segmentation models."""

from __future__ import annotations

import warnings

import pytest
import torch
from terratorch.tasks import SemanticSegmentationTask

from terratorch_hsi_peft.models import (
    PEFTEncoderDecoderFactory,
    SpectralPathClassifier,
    SpectralPathModel,
    SpectralPathSpec,
)
from terratorch_hsi_peft.models.spectral_path import window_average
from terratorch_hsi_peft.models.spectral_path_spec import PATH_HEAD

KRONA = {"method": "KRONA", "peft_config_kwargs": {"target_modules": ["attn.q", "attn.v"]}}

#: The segmentation model of the shipped configs, tiny: 4 layers -> pyramid -> UNet.
UNET_ARGS = {
    "backbone": "spectralgpt_vit_base",
    "backbone_num_bands": 6,
    "backbone_img_size": 16,
    "backbone_patch_size": 4,
    "backbone_depth": 4,
    "backbone_embed_dim": 16,
    "backbone_num_heads": 2,
    "necks": [
        {"name": "SelectIndices", "indices": [0, 1, 2, 3]},
        {"name": "ReshapeTokensToImage"},
        {"name": "LearnedInterpolateToPyramidal"},
    ],
    "decoder": "UNetDecoder",
    "decoder_channels": [16, 8, 8, 8],
    "num_classes": 3,
}


def build(peft_config: dict | None = None, task: str = "segmentation", **changes):
    torch.manual_seed(0)
    args = {**UNET_ARGS, **changes}
    return PEFTEncoderDecoderFactory().build_model(task, peft_config=peft_config, **args)


@pytest.mark.parametrize("peft_config", [None, KRONA], ids=["full", "krona"])
def test_head_sees_each_pixels_own_spectrum(peft_config):
    model = build(peft_config, spectral_path=8).eval()
    assert isinstance(model, SpectralPathModel)
    # Only the spectral path reaches the head: a change of one pixel's spectrum then changes
    # that pixel's logits and no other's.
    model.decoder.register_forward_hook(lambda module, args, out: torch.zeros_like(out))
    x = torch.randn(2, 6, 16, 16)
    changed = x.clone()
    changed[:, :, 5, 7] += 3.0
    with torch.no_grad():
        before, after = model(x).output, model(changed).output
    assert before.shape == (2, 3, 16, 16)
    moved = (after - before).abs().amax(dim=(0, 1))
    assert moved[5, 7] > 0
    moved[5, 7] = 0
    assert moved.max() == 0


@pytest.mark.parametrize("peft_config", [None, KRONA], ids=["full", "krona"])
def test_path_trains_and_the_stock_parts_are_kept(peft_config):
    model = build(peft_config, spectral_path=8)
    stock = build(peft_config)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert {f"spectral_path.{n}" for n, _ in model.spectral_path.named_parameters()} <= trainable
    assert trainable - {n for n in trainable if n.startswith("spectral_path.")} == {
        name for name, p in stock.named_parameters() if p.requires_grad
    }
    # The decoder's output and the rest of the forward are the stock model's.
    model.spectral_path.register_forward_hook(lambda module, args, out: torch.zeros_like(out))
    model.load_state_dict(
        {**stock.state_dict(), **model.spectral_path.state_dict(prefix="spectral_path.")}
    )
    x = torch.randn(2, 6, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x).output, stock.eval()(x).output)


def test_a_pixels_path_does_not_depend_on_the_rest_of_the_batch():
    # A training batch holds a few tiles of a few fields: a pixel's path must read that pixel
    # alone, in training as at test (BatchNorm's batch statistics would mix the batch in).
    path = build(spectral_path=8).spectral_path.train()
    x = torch.randn(2, 6, 16, 16)
    other = x.clone()
    other[1] = 10 * torch.randn(6, 16, 16)
    other[0, :, 8:] += 5.0
    with torch.no_grad():
        train_a, train_b = path(x), path(other)
        test = path.eval()(x)
    torch.testing.assert_close(train_a[0, :, :8], train_b[0, :, :8])
    torch.testing.assert_close(train_a, test)


@pytest.mark.parametrize("channels_last", [False, True])
def test_path_is_a_per_pixel_mlp_with_layernorm(channels_last):
    # Independent float64 reference: linear, LayerNorm over the pixel's channels, GELU, linear;
    # on a channel slice of a batch, as the appended spectra are, in either memory layout.
    path = build(spectral_path=8).spectral_path.double()
    with torch.no_grad():
        for p in path.parameters():
            p.copy_(torch.randn_like(p))
    batch = torch.randn(2, 9, 5, 7, dtype=torch.float64)
    if channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)
    x = batch[:, 3:]
    pixels = x.permute(0, 2, 3, 1)
    first, norm, last = path[0], path[1], path[3]
    h = pixels @ first.weight.T + first.bias
    variance = h.var(-1, unbiased=False, keepdim=True)
    h = (h - h.mean(-1, keepdim=True)) / torch.sqrt(variance + norm.eps)
    h = torch.nn.functional.gelu(h * norm.weight + norm.bias)
    expected = (h @ last.weight.T + last.bias).permute(0, 3, 1, 2)
    with torch.no_grad():
        torch.testing.assert_close(path(x), expected)


def test_output_at_input_size_when_the_decoder_gives_another():
    # 8x8 tokens on 16x16 input: the UNet's output is 8x8; the path needs the input's size.
    model = build(spectral_path=4, backbone_patch_size=8).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 6, 16, 16)).output.shape == (1, 3, 16, 16)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"spectral_path": 0}, r"spectral_path.width=0 must be a positive integer"),
        ({"spectral_path": {"width": 0}}, r"spectral_path.width=0 must be a positive integer"),
        ({"spectral_path": True}, r"spectral_path is True; give a mapping"),
        ({"spectral_path": "wide"}, r"spectral_path is 'wide'; give a mapping"),
        ({"spectral_path": {"width": 8, "size": 3}}, r"unknown keys \['size'\]"),
        (  # the flat keys of earlier releases
            {"spectral_path": 8, "spectral_path_window": 5},
            r"Write instead \(and remove spectral_path_window\):\n  spectral_path: "
            r"\{width: 8, window: 5\}",
        ),
    ],
)
def test_bad_spectral_path_is_a_clear_error(changes, message):
    with pytest.raises(ValueError, match=message):
        build(**changes)


CLASSIFIER_ARGS = {
    **{k: v for k, v in UNET_ARGS.items() if k != "decoder_channels"},
    "backbone_out_indices": [-1],
    "necks": [{"name": "AggregateTokens", "pooling": "mean"}],
    "decoder": "IdentityDecoder",
    "head_dim_list": [8],
}


def build_classifier(peft_config: dict | None = None, **changes):
    torch.manual_seed(0)
    args = {**CLASSIFIER_ARGS, **changes}
    return PEFTEncoderDecoderFactory().build_model(
        "classification", peft_config=peft_config, **args
    )


@pytest.mark.parametrize(("side", "patch"), [(15, 5), (16, 4)])
@pytest.mark.parametrize("peft_config", [None, KRONA], ids=["full", "krona"])
def test_classifier_path_reads_the_centre_pixels_appended_spectrum(peft_config, side, patch):
    model = build_classifier(
        peft_config,
        spectral_path={"width": 8, "bands": 10},
        backbone_img_size=side,
        backbone_patch_size=patch,
    ).eval()
    assert isinstance(model, SpectralPathClassifier)
    model.decoder.register_forward_hook(lambda module, args, out: torch.zeros_like(out))
    x = torch.randn(4, 16, side, side)
    path_input = []
    model.spectral_path.register_forward_pre_hook(lambda m, args: path_input.append(args[0]))
    with torch.no_grad():
        base = model(x).output
    assert base.shape == (4, 3)
    # The path's input is the centre pixel of the appended bands (central 2x2 mean if even).
    centre = slice((side - 1) // 2, side // 2 + 1)
    expected = x[:, 6:, centre, centre].mean(dim=(-2, -1))
    torch.testing.assert_close(path_input[0], expected)
    # Off-centre pixels and the routed bands do not reach the head past a silenced decoder.
    moved = x.clone()
    moved[:, 6:, 0, 0] += 5.0
    moved[:, :6] += 5.0
    with torch.no_grad():
        torch.testing.assert_close(model(moved).output, base, rtol=0, atol=0)


def test_classifier_path_trains_beside_the_stock_parts():
    model = build_classifier(KRONA, spectral_path=8)
    stock = build_classifier(KRONA)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable - {n for n in trainable if n.startswith("spectral_path.")} == {
        name for name, p in stock.named_parameters() if p.requires_grad
    }
    logits = model(torch.randn(4, 6, 16, 16)).output
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 0])).backward()
    assert model.spectral_path[0].weight.grad.abs().sum() > 0


def test_cli_string_values_are_read_as_yaml_scalars():
    assert isinstance(build(spectral_path="8"), SpectralPathModel)
    given = {"width": "8", "bands": "10", "loss": "true", "window": "5"}
    assert build(spectral_path=given).spec == SpectralPathSpec(8, 10, True, 5)


@pytest.mark.parametrize("peft_config", [None, KRONA], ids=["full", "krona"])
def test_appended_spectra_feed_the_path_and_routed_bands_the_encoder(peft_config):
    # 6 routed bands for the encoder, then 10 appended bands (append_spectra) for the path.
    model = build(peft_config, spectral_path={"width": 8, "bands": 10}).eval()
    assert model.spectral_path[0].in_features == 10
    seen = []
    model.encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    x = torch.randn(2, 16, 16, 16)
    with torch.no_grad():
        base = model(x).output
    torch.testing.assert_close(seen[0], x[:, :6], rtol=0, atol=0)
    # With the decoder silenced, only an appended band of one pixel moves that pixel's logits.
    model.decoder.register_forward_hook(lambda module, args, out: torch.zeros_like(out))
    with torch.no_grad():
        base = model(x).output
        routed, appended = x.clone(), x.clone()
        routed[:, :6, 5, 7] += 3.0
        appended[:, 6:, 5, 7] += 3.0
        torch.testing.assert_close(model(routed).output, base, rtol=0, atol=0)
        moved = (model(appended).output - base).abs().amax(dim=(0, 1))
    assert moved[5, 7] > 0
    moved[5, 7] = 0
    assert moved.max() == 0


def test_batch_without_the_appended_spectra_is_explained():
    model = build(spectral_path={"width": 8, "bands": 10})
    with pytest.raises(ValueError, match=r"6 routed bands followed by 10 appended .*has 6"):
        model(torch.randn(1, 6, 16, 16))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"spectral_path": {"bands": 10}}, r"spectral_path has no width \(\{'bands': 10\}\)"),
        ({"spectral_path": {"width": 8, "bands": 0}}, r"spectral_path.bands=0 must be"),
    ],
)
def test_bad_spectral_path_bands_is_a_clear_error(changes, message):
    with pytest.raises(ValueError, match=message):
        build(**changes)


@pytest.mark.parametrize("task", ["segmentation", "classification"])
def test_the_paths_own_logits_are_its_share_of_the_output(task):
    builder = build if task == "segmentation" else build_classifier
    model = builder(spectral_path={"width": 8, "loss": True})
    stock = builder(spectral_path=8)
    stock.load_state_dict(model.state_dict())
    x = torch.randn(4, 6, 16, 16)
    with torch.no_grad():
        out = model(x)
        # The flag adds an output in training; the main one is unchanged.
        torch.testing.assert_close(out.output, stock(x).output)
        assert not stock(x).auxiliary_heads
        # With the decoder's contribution removed, the main output is the path's alone.
        model.decoder.register_forward_hook(lambda module, args, o: torch.zeros_like(o))
        alone = model(x)
        # Validation, test and predict get the main output only.
        assert not model.eval()(x).auxiliary_heads
    path_logits = out.auxiliary_heads[PATH_HEAD]
    assert path_logits.shape == out.output.shape
    torch.testing.assert_close(path_logits, alone.output)


def test_the_stock_task_adds_the_weighted_path_loss():
    torch.manual_seed(0)
    task = SemanticSegmentationTask(
        model_factory="PEFTEncoderDecoderFactory",
        model_args={**UNET_ARGS, "spectral_path": {"width": 8, "loss": True}},
        loss="ce",
        ignore_index=-1,
        aux_loss={PATH_HEAD: 0.5},
        plot_on_val=False,
    )
    x = torch.randn(2, 6, 16, 16)
    y = torch.randint(-1, 3, (2, 16, 16))
    out = task.model(x)
    losses = task.train_loss_handler.compute_loss(out, y, task.criterion, task.aux_loss)
    ce = torch.nn.CrossEntropyLoss(ignore_index=-1)
    expected = ce(out.output, y) + 0.5 * ce(out.auxiliary_heads[PATH_HEAD], y)
    torch.testing.assert_close(losses["loss"], expected)
    losses["loss"].backward()
    assert task.model.spectral_path[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"spectral_path": {"loss": True}}, "spectral_path has no width"),
        ({"spectral_path": {"width": 8, "loss": "yes"}}, r"loss='yes' must be true or false"),
    ],
)
def test_bad_spectral_path_loss_is_a_clear_error(changes, message):
    with pytest.raises(ValueError, match=message):
        build(**changes)


def test_window_averages_the_path_over_each_pixels_neighbours():
    model = build(spectral_path={"width": 8, "window": 5}).eval()
    alone = build(spectral_path=8).eval()
    alone.load_state_dict(model.state_dict())
    for m in (model, alone):
        m.decoder.register_forward_hook(lambda module, args, out: torch.zeros_like(out))
    x = torch.randn(2, 6, 16, 16)
    with torch.no_grad():
        path = alone.spectral_path(x).double()
        out = model(x).output.double()
    # Reference: the mean of the path over the neighbours inside the tile, one pixel at a time.
    expected = torch.empty_like(path)
    for row in range(16):
        for col in range(16):
            window = path[:, :, max(row - 2, 0) : row + 3, max(col - 2, 0) : col + 3]
            expected[:, :, row, col] = window.mean(dim=(-2, -1))
    head = model.head.head[-1]
    logits = torch.nn.functional.conv2d(expected, head.weight.double(), head.bias.double())
    torch.testing.assert_close(out, logits, rtol=1e-5, atol=1e-5)
    # One pixel's spectrum reaches the pixels of its window only.
    changed = x.clone()
    changed[:, :, 5, 7] += 3.0
    with torch.no_grad():
        moved = (model(changed).output - model(x).output).abs().amax(dim=(0, 1))
    assert (moved[3:8, 5:10] > 0).all()
    moved[3:8, 5:10] = 0
    assert moved.max() == 0


@pytest.mark.parametrize(
    ("builder", "changes", "message"),
    [
        ("seg", {"spectral_path": {"width": 8, "window": 4}}, "window=4 must be a positive odd"),
        ("seg", {"spectral_path": {"width": 8, "window": 0}}, "window=0 must be a positive odd"),
        ("seg", {"spectral_path": {"width": 8, "window": True}}, "positive odd integer"),
        ("seg", {"spectral_path": {"window": 5}}, "spectral_path has no width"),
        (
            "cls",
            {"spectral_path": {"width": 8, "window": 5}},
            r"centre pixel only. Remove window from model_args.spectral_path",
        ),
    ],
)
def test_bad_spectral_path_window_is_a_clear_error(builder, changes, message):
    with pytest.raises(ValueError, match=message):
        (build if builder == "seg" else build_classifier)(**changes)


@pytest.mark.parametrize("side", [8, 16])
def test_window_average_is_constant_over_a_side_exactly_from_twice_its_length(side):
    # The bound check_window enforces, on values: pixel i averages max(0, i - r)..min(t - 1,
    # i + r), the same span for every i exactly when r >= t - 1, i.e. window >= 2t - 1.
    x = torch.randn(2, 3, side, side).double()
    mean = x.mean(dim=(-2, -1), keepdim=True).expand_as(x)
    for window in (2 * side - 1, 2 * side + 1):
        torch.testing.assert_close(window_average(x, window), mean)
    below = window_average(x, 2 * side - 3)
    spread = (below - below.mean(dim=(-2, -1), keepdim=True)).abs().amax(dim=(-2, -1))
    assert (spread > 1e-3).all()  # one step below the bound, pixels still differ
    # A tile twice as wide: the same window is constant along the height only.
    wide = window_average(torch.randn(2, 3, side, 2 * side).double(), 2 * side - 1)
    torch.testing.assert_close(wide, wide[:, :, :1].expand_as(wide))
    assert (wide[..., 0] - wide[..., -1]).abs().amax() > 1e-3


@pytest.mark.parametrize(
    ("window", "size", "message"),
    [
        (31, (16, 16), r"spectral_path.window=31 on 16x16 tiles makes the spectral path constant "
         r"across them \(one value per tile\).*whole side of 16 pixels \(31 or more does\).*at "
         r"most 16.*at least 31 pixels a side"),
        (33, (16, 32), r"on 16x32 tiles .* \(the same all along the tile's height\)"),
    ],
)  # fmt: skip
def test_a_window_that_makes_the_path_constant_is_refused(window, size, message):
    model = build(spectral_path={"width": 8, "window": window}).eval()
    with pytest.raises(ValueError, match=message), torch.no_grad():
        model(torch.randn(1, 6, *size))


def test_a_window_wider_than_the_tile_is_warned_about_once_and_still_local():
    model = build(spectral_path={"width": 8, "window": 29}).eval()
    model.decoder.register_forward_hook(lambda module, args, out: torch.zeros_like(out))
    x = torch.randn(1, 6, 16, 16)
    warned = pytest.warns(UserWarning, match=r"=29 is wider than the 16x16 tiles.*at most 16")
    with warned, torch.no_grad():
        out = model(x).output  # only the averaged path reaches the head
    assert (out[..., 0, 0] - out[..., -1, -1]).abs().amax() > 1e-4  # not constant
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():
            model(x)  # the same tile size again: checked once
        model = build(spectral_path={"width": 8, "window": 15}).eval()
        with torch.no_grad():
            model(x)  # a window no wider than the tile: no warning


def test_a_checkpoint_with_the_former_batchnorm_path_is_refused_clearly():
    model = build(spectral_path=8)
    state = model.state_dict()
    state["spectral_path.1.running_mean"] = torch.zeros(8)
    with pytest.raises(ValueError, match="trained by an earlier terratorch-hsi-peft"):
        model.load_state_dict(state)
