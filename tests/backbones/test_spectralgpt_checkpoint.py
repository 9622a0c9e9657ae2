"""Loading official-layout SpectralGPT checkpoints: every weight arrives, nothing silently lost."""

from __future__ import annotations

import argparse
import functools
import http.server
import pickle
import threading
from pathlib import Path

import pytest
import torch
from spectralgpt_reference import bicubic_table, official_state_dict, spectral_interp

from terratorch_hsi_peft.backbones import (
    CheckpointError,
    checkpoint_filter_fn,
    factories,
    spectralgpt_vit_base,
)
from terratorch_hsi_peft.backbones.checkpoint import CACHE_ENV, fetch_checkpoint
from terratorch_hsi_peft.utils import DownloadError

DIM, DEPTH = 24, 2
TINY = {"embed_dim": DIM, "depth": DEPTH, "num_heads": 2}


def write_official(path: Path, sd: dict[str, torch.Tensor]) -> Path:
    """Save as the official training script does: weights under 'model' plus training state."""
    torch.save(
        {
            "model": sd,
            "optimizer": {
                "state": {0: {"step": torch.tensor(3.0)}},
                "param_groups": [{"lr": 1e-4}],
            },
            "epoch": 199,
            "scaler": {"scale": 65536.0, "growth_factor": 2.0},
            "args": argparse.Namespace(model="mae_vit_base_patch8_128", input_size=128, lr=None),
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def official_sd() -> dict[str, torch.Tensor]:
    return official_state_dict(DIM, DEPTH, grid=16, groups=4)  # SpectralGPT+: 16x16 grid, 12 bands


@pytest.fixture
def official_file(tmp_path, official_sd) -> Path:
    return write_official(tmp_path / "SpectralGPT+.pth", official_sd)


def test_official_layout_loads_into_200_band_32px_model(official_file, official_sd):
    # the file really needs the allow-list: plain weights_only loading refuses its Namespace
    with pytest.raises(pickle.UnpicklingError):
        torch.load(official_file, weights_only=True)

    model = spectralgpt_vit_base(**TINY, num_bands=200, img_size=32, ckpt_path=str(official_file))
    report = model.load_report
    state = model.state_dict()
    encoder_keys = [k for k in official_sd if not k.startswith(("mask_token", "decoder_"))]
    assert sorted(report.loaded) == sorted(encoder_keys) == sorted(state)
    for key in encoder_keys:
        if not key.startswith("pos_embed"):
            torch.testing.assert_close(state[key], official_sd[key], rtol=0, atol=0)
    expected_spatial = bicubic_table(official_sd["pos_embed_spatial"], 16, (4, 4)).float()
    expected_spectral = spectral_interp(official_sd["pos_embed_temporal"], 67).float()
    torch.testing.assert_close(state["pos_embed_spatial"], expected_spatial, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state["pos_embed_temporal"], expected_spectral, rtol=1e-6, atol=1e-6)
    assert report.resized == {
        "pos_embed_spatial": ((1, 256, DIM), (1, 16, DIM)),
        "pos_embed_temporal": ((1, 4, DIM), (1, 67, DIM)),
    }
    assert sorted(report.dropped) == sorted(set(official_sd) - set(encoder_keys))
    assert "mask_token" in report.dropped and report.missing == []
    text = str(report)
    assert "pos_embed_spatial [1, 256, 24] -> [1, 16, 24]" in text and "mask_token" in text


def test_same_shapes_load_unchanged_and_learned_fusion_is_reported_missing(tmp_path):
    sd = official_state_dict(DIM, DEPTH, grid=4, groups=4)
    bare = {f"module.{k}": v for k, v in sd.items()}  # a bare DDP state dict
    torch.save(bare, tmp_path / "bare.pth")
    model = spectralgpt_vit_base(
        **TINY, img_size=32, group_fusion="learned", ckpt_path=str(tmp_path / "bare.pth")
    )
    assert model.load_report.resized == {}
    assert model.load_report.missing == [
        f"fusion_layers.{i}.{p}" for i in range(4) for p in ("weight", "bias")
    ]
    torch.testing.assert_close(model.pos_embed_spatial.data, sd["pos_embed_spatial"])


def test_filter_fn_is_timm_style(official_sd):
    model = spectralgpt_vit_base(**TINY, num_bands=12, img_size=128)
    adapted = checkpoint_filter_fn(official_sd, model)
    assert set(adapted) == set(model.state_dict())
    model.load_state_dict(adapted, strict=True)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"depth": 1}, r"weights this model does not have: blocks\.1\..*set depth"),
        ({"depth": 3}, r"lacks encoder weights the model needs: blocks\.2\."),
        ({"patch_size": 4}, r"patch_embed\.proj\.weight .*set patch_size, t_patch_size"),
        ({"t_patch_size": 2}, r"patch_embed\.proj\.weight .*set patch_size, t_patch_size"),
        ({"embed_dim": 32}, r"shape .* cannot be adapted|Set embed_dim"),
    ],
)
def test_mismatched_checkpoint_names_the_fix(official_file, change, match):
    options = {**TINY, "img_size": 32, **change}
    with pytest.raises(CheckpointError, match=match):
        spectralgpt_vit_base(**options, ckpt_path=str(official_file))


def test_joint_pos_embed_checkpoint_is_refused(tmp_path, official_sd):
    sd = {k: v for k, v in official_sd.items() if not k.startswith("pos_embed_")}
    sd["pos_embed"] = torch.zeros(1, 1024, DIM)  # the fine-tuning code's joint table
    path = write_official(tmp_path / "joint.pth", sd)
    with pytest.raises(CheckpointError, match=r"does not have: pos_embed\b"):
        spectralgpt_vit_base(**TINY, img_size=32, ckpt_path=str(path))


def test_truncated_corrupt_and_foreign_files_are_clear_errors(tmp_path, official_file):
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(official_file.read_bytes()[:2000])
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    for path in (truncated, text):
        with pytest.raises(CheckpointError, match=rf"{path.name}.*truncated/corrupt.*Delete it"):
            spectralgpt_vit_base(**TINY, img_size=32, ckpt_path=str(path))
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "extra": Path("x")}, unsafe)
    with pytest.raises(CheckpointError, match="not loaded for safety"):
        spectralgpt_vit_base(**TINY, img_size=32, ckpt_path=str(unsafe))
    no_weights = tmp_path / "list.pth"
    torch.save([1, 2], no_weights)
    with pytest.raises(CheckpointError, match="holds no state dict"):
        spectralgpt_vit_base(**TINY, img_size=32, ckpt_path=str(no_weights))
    with pytest.raises(FileNotFoundError, match="Set ckpt_path"):
        spectralgpt_vit_base(**TINY, img_size=32, ckpt_path=str(tmp_path / "absent.pth"))


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves files from a folder; /cut/<name> promises the whole file but sends a tenth."""

    def do_GET(self):
        if not self.path.startswith("/cut/"):
            return super().do_GET()
        data = (Path(self.directory) / self.path.removeprefix("/cut/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 10])
        self.close_connection = True
        return None

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(_Handler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


def test_url_checkpoint_is_cached_and_truncated_transfer_leaves_nothing(
    server, tmp_path, monkeypatch, official_sd
):
    folder, base = server
    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(cache))
    write_official(folder / "SpectralGPT+.pth", official_sd)

    with pytest.raises(DownloadError, match="cut short"):
        fetch_checkpoint(f"{base}/cut/SpectralGPT+.pth")
    assert not cache.exists() or list(cache.iterdir()) == []

    model = spectralgpt_vit_base(**TINY, img_size=32, ckpt_path=f"{base}/SpectralGPT+.pth")
    cached = cache / "SpectralGPT+.pth"
    assert cached.read_bytes() == (folder / "SpectralGPT+.pth").read_bytes()
    assert model.load_report.source == str(cached)
    (folder / "SpectralGPT+.pth").unlink()  # a second build reads the cache, not the server
    again = spectralgpt_vit_base(**TINY, img_size=32, ckpt_path=f"{base}/SpectralGPT+.pth")
    torch.testing.assert_close(again.state_dict(), model.state_dict())


def test_pretrained_without_path_downloads_spectralgpt_plus(
    server, tmp_path, monkeypatch, official_sd
):
    assert factories.SPECTRALGPT_PLUS_URL == (
        "https://zenodo.org/records/8412455/files/SpectralGPT+.pth?download=1"
    )
    folder, base = server
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    write_official(folder / "SpectralGPT+.pth", official_sd)
    monkeypatch.setattr(factories, "SPECTRALGPT_PLUS_URL", f"{base}/SpectralGPT+.pth?download=1")
    model = spectralgpt_vit_base(**TINY, img_size=32, pretrained=True)
    assert model.load_report.source == str(tmp_path / "cache" / "SpectralGPT+.pth")
    torch.testing.assert_close(model.norm.weight.data, official_sd["norm.weight"])
