"""SpectralGPT's masked autoencoder: parity with the official code, checkpoints both ways."""

from __future__ import annotations

import argparse
import logging
import re

import pytest
import torch
from mae_reference import official_mae_forward, official_mae_state_dict
from terratorch.models.model import ReconstructionOutput
from terratorch.registry import FULL_MODEL_REGISTRY

from terratorch_hsi_peft.backbones import CheckpointError, spectralgpt_vit_base
from terratorch_hsi_peft.backbones.checkpoint import CACHE_ENV, cached_path
from terratorch_hsi_peft.pretraining import (
    OFFICIAL_MASK_RATIO,
    SpectralGPTMAE,
    export_encoder,
    load_mae_checkpoint,
    spectralgpt_mae_vit_base,
)
from terratorch_hsi_peft.utils import sha256sum

TINY = {
    "embed_dim": 24,
    "depth": 2,
    "num_heads": 2,
    "decoder_embed_dim": 16,
    "decoder_depth": 2,
    "decoder_num_heads": 2,
}


def official_checkpoint(path, sd: dict[str, torch.Tensor]) -> None:
    """A file as the official main_pretrain.py writes it (misc.save_model)."""
    args = argparse.Namespace(model="mae_vit_base_patch8_128", mask_ratio=0.9, norm_pix_loss=False)
    torch.save({"model": sd, "optimizer": {}, "epoch": 7, "scaler": {}, "args": args}, path)


def tiny_mae_state_dict() -> dict[str, torch.Tensor]:
    """An official MAE of TINY's sizes on a 4x4 grid of 4 spectral groups."""
    return official_mae_state_dict(24, 2, grid=4, groups=4, decoder_dim=16, decoder_depth=2)


def float32_exact(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """float64 values a float32 model holds exactly (loading then .double() loses nothing)."""
    return {k: v.float().double() for k, v in sd.items()}


@pytest.mark.parametrize(("mask_ratio", "norm_pix_loss"), [(0.75, False), (0.9, True)])
def test_matches_official_forward_in_float64(tmp_path, mask_ratio, norm_pix_loss):
    sd = float32_exact(
        official_mae_state_dict(24, 2, grid=4, groups=4, decoder_dim=16, decoder_depth=2)
    )
    path = tmp_path / "checkpoint-7.pth"
    official_checkpoint(path, sd)
    model = spectralgpt_mae_vit_base(
        **TINY, img_size=32, ckpt_path=str(path), norm_pix_loss=norm_pix_loss
    )
    report = model.load_report
    assert sorted(report.loaded) == sorted(sd) and not report.missing
    assert not report.dropped and not report.resized
    model = model.double().eval()
    gen = torch.Generator().manual_seed(1)
    imgs = torch.randn(2, 12, 32, 32, generator=gen, dtype=torch.float64)
    noise = torch.rand(2, 64, generator=gen, dtype=torch.float64)
    ref = official_mae_forward(sd, imgs, noise, mask_ratio, 2, 2, 2, 2, norm_pix_loss)

    latent, mask, ids_restore, grid = model.forward_encoder(imgs, mask_ratio, noise)
    pred = model.forward_decoder(latent, ids_restore, grid)
    torch.testing.assert_close(latent, ref["latent"], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(pred, ref["pred"], rtol=1e-12, atol=1e-12)
    assert torch.equal(mask, ref["mask"]) and mask.sum() == 2 * (64 - int(64 * (1 - mask_ratio)))
    out = model(imgs, mask_ratio=mask_ratio, noise=noise)
    assert isinstance(out, ReconstructionOutput)
    torch.testing.assert_close(out.loss["loss"], ref["loss"], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.loss["loss"], out.loss["masked_mse"] + out.loss["spectral_sum"])
    # pixel layouts: the prediction unpatchified, the mask per band and pixel (1 = masked)
    assert torch.equal(model.patchify(out.pred), pred)
    token_mask = out.mask[:, ::3, ::8, ::8].reshape(2, -1)
    assert torch.equal(token_mask, mask) and out.mask.shape == imgs.shape


def test_five_dimensional_input_gives_five_dimensional_prediction():
    model = spectralgpt_mae_vit_base(**TINY, img_size=16)
    x = torch.randn(2, 12, 16, 16)
    noise = torch.rand(2, 16)
    flat, cube = model(x, noise=noise), model(x[:, None], noise=noise)
    assert cube.pred.shape == (2, 1, 12, 16, 16) and cube.mask.shape == (2, 12, 16, 16)
    torch.testing.assert_close(cube.pred[:, 0], flat.pred)
    torch.testing.assert_close(cube.loss["loss"], flat.loss["loss"])


def test_padded_bands_count_nowhere_in_the_loss():
    model = spectralgpt_mae_vit_base(**TINY, img_size=16, num_bands=13)  # 5 groups, 2 bands padded
    x = torch.randn(2, 13, 16, 16)
    noise = torch.rand(2, 5 * 4)
    latent, mask, ids_restore, grid = model.forward_encoder(x, None, noise)
    pred = model.forward_decoder(latent, ids_restore, grid)
    losses = model.forward_loss(x, pred, mask)
    changed = pred.clone()
    padded = changed.reshape(2, 5, 4, 3, 64)[:, 4, :, 1:]  # last group, bands 14 and 15
    padded += 100.0
    torch.testing.assert_close(model.forward_loss(x, changed, mask), losses)
    out = model(x, noise=noise)
    assert out.pred.shape == (2, 13, 16, 16) and out.mask.shape == (2, 13, 16, 16)


def test_registered_and_built_by_full_model_factory():
    from terratorch.models.full_model_factory import FullModelFactory

    model = FullModelFactory().build_model(model="spectralgpt_mae_vit_base", **TINY, img_size=16)
    assert isinstance(model, SpectralGPTMAE) and model.mask_ratio == OFFICIAL_MASK_RATIO == 0.9
    assert isinstance(FULL_MODEL_REGISTRY.build("spectralgpt_mae_vit_large", depth=1, img_size=16,
                                                decoder_depth=1), SpectralGPTMAE)  # fmt: skip
    assert model.decoder_pred.out_features == 3 * 8 * 8 and len(model.decoder_blocks) == 2
    model = spectralgpt_mae_vit_base(embed_dim=24, depth=1, num_heads=2, img_size=16)
    assert (model.decoder_embed.out_features, len(model.decoder_blocks)) == (512, 4)
    assert model.decoder_blocks[0].attn.num_heads == 16


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mask_ratio": 1.0}, "mask_ratio must be a number in \\(0, 1\\)"),
        ({"mask_ratio": 0}, "mask_ratio=0 masks no token"),
        ({"mask_ratio": "0.999"}, "keeps no token"),
        ({"decoder_embed_dim": 20, "decoder_num_heads": 3}, "decoder_num_heads to a divisor"),
        ({"decoder_mlp": 2}, "unknown argument"),
        ({"norm_pix_loss": "yes please"}, "norm_pix_loss must be true or false"),
    ],
)
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        model = spectralgpt_mae_vit_base(**{**TINY, "img_size": 16, **kwargs})
        model(torch.randn(1, 12, 16, 16))


def test_wrong_noise_shape_is_named():
    model = spectralgpt_mae_vit_base(**TINY, img_size=16)
    with pytest.raises(ValueError, match="noise must have shape"):
        model(torch.randn(2, 12, 16, 16), noise=torch.rand(2, 15))


def test_continued_pretraining_resizes_both_position_tables(tmp_path):
    sd = official_mae_state_dict(24, 2, grid=4, groups=4, decoder_dim=16, decoder_depth=2)
    path = tmp_path / "SpectralGPT+.pth"
    official_checkpoint(path, sd)
    model = spectralgpt_mae_vit_base(**TINY, img_size=16, num_bands=15, ckpt_path=str(path))
    resized = model.load_report.resized
    assert resized["pos_embed_spatial"] == ((1, 16, 24), (1, 4, 24))
    assert resized["decoder_pos_embed_spatial"] == ((1, 16, 16), (1, 4, 16))
    assert resized["decoder_pos_embed_temporal"] == ((1, 4, 16), (1, 5, 16))
    assert not model.load_report.missing


def test_checkpoint_that_does_not_fit_is_refused_with_the_fix(tmp_path):
    sd = official_mae_state_dict(24, 2, grid=4, groups=4, decoder_dim=16, decoder_depth=2)
    path = tmp_path / "deeper.pth"
    official_checkpoint(path, sd)
    model = SpectralGPTMAE(**{**TINY, "decoder_depth": 1}, img_size=32)
    with pytest.raises(
        CheckpointError, match="Set decoder_depth to the checkpoint's \\(2 blocks\\)"
    ):
        load_mae_checkpoint(model, path)
    model = SpectralGPTMAE(**TINY, img_size=32, patch_size=4)
    with pytest.raises(CheckpointError, match="patch_size"):
        load_mae_checkpoint(model, path)


def test_export_loads_into_the_backbone_with_an_empty_report_and_back(tmp_path):
    model = spectralgpt_mae_vit_base(**TINY, img_size=16, num_bands=14)
    path = export_encoder(model, tmp_path / "encoder.pth")
    content = torch.load(path, weights_only=True)
    assert set(content) == {"model", "args"} and content["args"]["num_bands"] == 14
    backbone = spectralgpt_vit_base(
        embed_dim=24, depth=2, num_heads=2, img_size=16, num_bands=14, ckpt_path=str(path)
    )
    report = backbone.load_report
    assert not report.missing and not report.dropped and not report.resized
    assert sorted(report.loaded) == sorted(model.encoder.state_dict())
    for key, value in model.encoder.state_dict().items():
        assert torch.equal(backbone.state_dict()[key], value)
    # an encoder-only file starts continued pre-training with a fresh decoder, and says so
    fresh = spectralgpt_mae_vit_base(**TINY, img_size=16, num_bands=14, ckpt_path=str(path))
    assert fresh.load_report.missing and all(
        k.startswith(("decoder_", "mask_token")) for k in fresh.load_report.missing
    )


@pytest.mark.parametrize("masked_metric", [True, False])
def test_stock_reconstruction_task_scores_the_five_dimensional_batches(masked_metric):
    from terratorch.tasks import ReconstructionTask

    task = ReconstructionTask(
        model_factory="FullModelFactory",
        model_args={"model": "spectralgpt_mae_vit_base", **TINY, "img_size": 16},
        masked_metric=masked_metric,
    )
    x = torch.randn(2, 1, 12, 16, 16)  # the pre-training datamodule's layout
    out = task(x)
    target = task.mask_input(x, out.mask) if masked_metric else x
    assert torch.isnan(target).sum() == (out.mask.sum() if masked_metric else 0)
    task.train_metrics.update(out.pred, target)
    assert torch.isfinite(task.train_metrics.compute()["train/MSE"])


def test_encoder_export_refuses_a_model_without_the_mae():
    from terratorch_hsi_peft.callbacks import EncoderExport

    class Task(torch.nn.Module):
        model = torch.nn.Linear(2, 2)

    with pytest.raises(ValueError, match="spectralgpt_mae_vit_\\*; drop it"):
        EncoderExport().setup(None, Task(), "fit")


def test_export_from_a_lightning_checkpoint_equals_the_direct_export(tmp_path):
    from terratorch_hsi_peft.pretraining import export_encoder_from_checkpoint

    model = spectralgpt_mae_vit_base(**TINY, img_size=16, num_bands=14)
    routes = {"scenes": ["indian_pines"], "band_routes": [{"route": "pca", "mean": torch.ones(3)}]}
    lightning = {
        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        "hyper_parameters": {"model_args": {"model": "spectralgpt_mae_vit_base", "num_bands": 14}},
        "HyperspectralPretrainDataModule": routes,
    }
    torch.save(lightning, tmp_path / "last.ckpt")
    made = export_encoder_from_checkpoint(tmp_path / "last.ckpt")
    assert made == tmp_path / "last.encoder.pth"
    direct = torch.load(export_encoder(model, tmp_path / "direct.pth", routes), weights_only=True)
    from_ckpt = torch.load(made, weights_only=True)
    assert from_ckpt["args"] == direct["args"] and from_ckpt["scenes"] == ["indian_pines"]
    assert from_ckpt["model"].keys() == direct["model"].keys()
    assert all(torch.equal(from_ckpt["model"][k], v) for k, v in direct["model"].items())

    torch.save({"state_dict": {"model.head.weight": torch.ones(1)}}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="holds no SpectralGPT masked-autoencoder encoder"):
        export_encoder_from_checkpoint(tmp_path / "other.ckpt")


def test_task_freezes_encoder_or_decoder_on_request():
    from terratorch.tasks import ReconstructionTask

    args = {"model": "spectralgpt_mae_vit_base", **TINY, "img_size": 16}
    task = ReconstructionTask("FullModelFactory", args, freeze_encoder=True)
    trainable = {n for n, p in task.model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("decoder_", "mask_token")) for n in trainable)
    task = ReconstructionTask("FullModelFactory", args, freeze_decoder=True)
    trainable = {n for n, p in task.model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in task.model.encoder.named_parameters(prefix="encoder")}


def test_training_steps_lower_the_reconstruction_loss():
    torch.manual_seed(0)
    model = spectralgpt_mae_vit_base(**TINY, img_size=16, mask_ratio=0.75)
    x = torch.randn(4, 12, 16, 16)
    noise = torch.rand(4, 16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    first = None
    for _ in range(30):
        loss = model(x, noise=noise).loss["loss"]
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(p.grad is not None for p in model.parameters())
    assert model(x, noise=noise).loss["loss"].item() < 0.8 * first


def test_a_damaged_cached_download_is_removed_and_the_report_names_url_and_sha256(
    tmp_path, monkeypatch, caplog
):
    # the backbone's reading path: URL-keyed cache, sha256, report logged, weights origin recorded
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    url = "http://127.0.0.1:9/v2/SpectralGPT+.pth"  # never contacted: the file is in the cache
    cached = cached_path(url)
    cached.parent.mkdir(parents=True)
    official_checkpoint(cached, tiny_mae_state_dict())
    digest = sha256sum(cached)
    with caplog.at_level(logging.INFO):
        model = spectralgpt_mae_vit_base(**TINY, img_size=16, ckpt_path=url, ckpt_sha256=digest)
    report = model.load_report
    assert (report.url, report.sha256) == (url, digest)
    assert model.encoder.load_report is report
    assert model.encoder.weights_origin == f"checkpoint {url} (sha256 {digest})"
    (record,) = [r for r in caplog.records if f"(from {url}), sha256 {digest}" in r.getMessage()]
    assert record.levelno == logging.WARNING  # position tables were resized
    assert "decoder_pos_embed_spatial [1, 16, 16] -> [1, 4, 16]" in record.getMessage()

    cached.write_bytes(cached.read_bytes()[:1000])  # damaged on disk after the download
    removed = f"{re.escape(str(cached))}: .*cached download of {re.escape(url)} and was removed"
    with pytest.raises(CheckpointError, match=rf"{removed}; run again"):
        spectralgpt_mae_vit_base(**TINY, img_size=16, ckpt_path=url)
    assert not cached.exists()


def test_ckpt_sha256_is_checked_like_the_backbones(tmp_path):
    path = tmp_path / "SpectralGPT+.pth"
    official_checkpoint(path, tiny_mae_state_dict())
    with pytest.raises(CheckpointError, match=r"has sha256 .* not the expected ffff"):
        spectralgpt_mae_vit_base(**TINY, img_size=16, ckpt_path=str(path), ckpt_sha256="f" * 64)
    with pytest.raises(ValueError, match="ckpt_sha256 is set but no checkpoint is loaded"):
        spectralgpt_mae_vit_base(**TINY, img_size=16, ckpt_sha256="f" * 64)
    with pytest.raises(ValueError, match="must be 64 hex digits"):
        spectralgpt_mae_vit_base(**TINY, img_size=16, ckpt_path=str(path), ckpt_sha256="abc")


def test_a_checkpoint_named_with_digits_only_stays_a_path(tmp_path, monkeypatch):
    # a dotted CLI override leaves the string "2024"; read as a YAML int it is no path any more
    monkeypatch.chdir(tmp_path)
    official_checkpoint(tmp_path / "2024", tiny_mae_state_dict())
    model = FULL_MODEL_REGISTRY.build(
        "spectralgpt_mae_vit_base", **TINY, img_size=16, ckpt_path="2024"
    )
    assert model.load_report.source == "2024" and not model.load_report.missing


def test_export_from_a_lightning_checkpoint_records_num_bands_and_refuses_objects(tmp_path):
    from terratorch_hsi_peft.pretraining import export_encoder_from_checkpoint

    model = spectralgpt_mae_vit_base(**TINY, img_size=16)  # num_bands: the default 12
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    path = tmp_path / "last.ckpt"
    # unset (the factory's default), or the text a dotted CLI override leaves
    for model_args in ({"model": "spectralgpt_mae_vit_base"}, {"num_bands": "12"}):
        torch.save({"state_dict": state, "hyper_parameters": {"model_args": model_args}}, path)
        args = torch.load(export_encoder_from_checkpoint(path), weights_only=True)["args"]
        assert args["num_bands"] == 12
    # a pickled object is refused as such, without torch's advice to load with weights_only=False
    torch.save({"state_dict": state, "extra": argparse.Namespace(lr=1.0)}, path)
    with pytest.raises(CheckpointError) as error:
        export_encoder_from_checkpoint(path)
    message = str(error.value)
    assert "holds Python objects/code (argparse.Namespace) and will not be loaded" in message
    assert "set to `False`" not in message and "EncoderExport" in message
