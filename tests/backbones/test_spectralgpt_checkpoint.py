"""Loading official-layout SpectralGPT checkpoints: every weight arrives, nothing silently lost."""

from __future__ import annotations

import argparse
import functools
import http.server
import logging
import os
import pickle
import re
import textwrap
import threading
from pathlib import Path

import pytest
import torch
from spectralgpt_reference import bicubic_table, official_state_dict, spectral_interp
from terratorch_cli import terratorch

from terratorch_hsi_peft.backbones import (
    CheckpointError,
    checkpoint_filter_fn,
    factories,
    spectralgpt_vit_base,
)
from terratorch_hsi_peft.backbones.checkpoint import CACHE_ENV, cached_path, fetch_checkpoint
from terratorch_hsi_peft.utils import DownloadError, sha256sum

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
    assert model.load_report.missing == [  # one fusion layer per returned layer: all of them
        f"fusion_layers.{i}.{p}" for i in range(DEPTH) for p in ("weight", "bias")
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
    with pytest.raises(CheckpointError, match="will not be loaded for safety"):
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
    assert [p for p in cache.rglob("*") if p.is_file()] == []

    model = spectralgpt_vit_base(**TINY, img_size=32, ckpt_path=f"{base}/SpectralGPT+.pth")
    cached = cached_path(f"{base}/SpectralGPT+.pth")
    assert cached.parent.parent == cache and cached.name == "SpectralGPT+.pth"
    assert cached.read_bytes() == (folder / "SpectralGPT+.pth").read_bytes()
    assert model.load_report.source == str(cached)
    (folder / "SpectralGPT+.pth").unlink()  # a second build reads the cache, not the server
    again = spectralgpt_vit_base(**TINY, img_size=32, ckpt_path=f"{base}/SpectralGPT+.pth")
    torch.testing.assert_close(again.state_dict(), model.state_dict())


def test_pretrained_without_path_downloads_spectralgpt_plus(
    server, tmp_path, monkeypatch, official_sd
):
    assert factories.RELEASED == {
        "base": "https://zenodo.org/records/8412455/files/SpectralGPT+.pth?download=1"
    }
    folder, base = server
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    write_official(folder / "SpectralGPT+.pth", official_sd)
    monkeypatch.setitem(factories.RELEASED, "base", f"{base}/SpectralGPT+.pth?download=1")
    model = spectralgpt_vit_base(**TINY, img_size=32, pretrained=True)
    assert model.load_report.source == str(cached_path(f"{base}/SpectralGPT+.pth?download=1"))
    torch.testing.assert_close(model.norm.weight.data, official_sd["norm.weight"])


class _RunsCode:
    """Unpickling this runs a shell command: what weights_only=True exists to refuse."""

    def __reduce__(self):
        return (os.system, ("echo unpickled",))


def test_a_file_holding_code_is_refused_as_such_not_as_corrupt(tmp_path, official_sd):
    # issue 13 item 10: reported as "truncated/corrupt, download it again", with torch's advice
    # to load with weights_only=False appended
    path = tmp_path / "with_code.pth"
    torch.save({"model": official_sd, "hook": _RunsCode()}, path)
    with pytest.raises(CheckpointError) as caught:
        spectralgpt_vit_base(**TINY, img_size=32, ckpt_path=str(path))
    message = str(caught.value)
    assert f"Cannot read checkpoint {path}: it holds Python objects/code (posix.system)" in message
    assert "will not be loaded for safety" in message and "torch.save(model.state_dict()" in message
    assert "weights_only" not in message and "corrupt" not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_text_and_html_files_are_reported_without_torchs_weights_only_advice(tmp_path):
    page = tmp_path / "page.pth"
    page.write_text("<!DOCTYPE html><html><body>Not Found</body></html>")
    with pytest.raises(CheckpointError) as caught:
        spectralgpt_vit_base(**TINY, img_size=32, ckpt_path=str(page))
    message = str(caught.value)
    assert re.search(r"truncated/corrupt \(\d+ bytes; it starts with '<!DOCTYPE html>", message)
    assert "weights_only" not in message


def _variant(sd: dict[str, torch.Tensor], shift: float) -> dict[str, torch.Tensor]:
    return {k: v + shift for k, v in sd.items()}


def test_cache_is_keyed_by_the_full_url(server, tmp_path, monkeypatch, official_sd):
    # issue 13 item 1: .../v2/model.pth silently loaded the cached .../v1/model.pth
    folder, base = server
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    for version, shift in (("v1", 0.0), ("v2", 1.0)):
        (folder / version).mkdir()
        write_official(folder / version / "model.pth", _variant(official_sd, shift))
    v1 = spectralgpt_vit_base(**TINY, img_size=32, ckpt_path=f"{base}/v1/model.pth")
    v2 = spectralgpt_vit_base(**TINY, img_size=32, ckpt_path=f"{base}/v2/model.pth")
    torch.testing.assert_close(v1.norm.weight.data, official_sd["norm.weight"])
    torch.testing.assert_close(v2.norm.weight.data, official_sd["norm.weight"] + 1.0)
    paths = {cached_path(f"{base}/{v}/model.pth") for v in ("v1", "v2")}
    assert len(paths) == 2 and all(p.name == "model.pth" and p.is_file() for p in paths)
    assert v2.load_report.url == f"{base}/v2/model.pth"
    assert v2.load_report.sha256 == sha256sum(folder / "v2" / "model.pth")
    assert v2.weights_origin == f"checkpoint {base}/v2/model.pth (sha256 {v2.load_report.sha256})"


def test_a_known_sha256_is_checked(server, tmp_path, monkeypatch, official_sd):
    folder, base = server
    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(cache))
    write_official(folder / "model.pth", official_sd)
    digest = sha256sum(folder / "model.pth")
    url = f"{base}/model.pth"
    # a mistyped digest: the message shows both digests and names both causes, with their fixes
    with pytest.raises(DownloadError) as err:
        spectralgpt_vit_base(**TINY, img_size=32, ckpt_path=url, ckpt_sha256="f" * 64)
    message = str(err.value)
    assert f"sha256 {digest} does not match the expected {'f' * 64}" in message
    assert "corrupt (a damaged transfer) or changed upstream" in message
    assert f"nothing was kept at {cached_path(url)}; run again to download it anew" in message
    assert "the digest given (backbone_ckpt_sha256 / ckpt_sha256) is wrong" in message
    assert "compare it with the sha256 the publisher gives and correct it" in message
    assert not cached_path(url).exists()
    model = spectralgpt_vit_base(**TINY, img_size=32, ckpt_path=url, ckpt_sha256=digest)
    assert model.load_report.sha256 == digest
    # a cached file that differs from the known digest is downloaded again
    cached_path(url).write_bytes(b"stale")
    spectralgpt_vit_base(**TINY, img_size=32, ckpt_path=url, ckpt_sha256=digest)
    assert sha256sum(cached_path(url)) == digest
    # local files are checked too; the option needs a checkpoint and a well-formed digest
    with pytest.raises(CheckpointError, match=r"has sha256 .* not the expected ffff"):
        spectralgpt_vit_base(
            **TINY, img_size=32, ckpt_path=str(folder / "model.pth"), ckpt_sha256="f" * 64
        )
    with pytest.raises(ValueError, match="ckpt_sha256 is set but no checkpoint is loaded"):
        spectralgpt_vit_base(**TINY, img_size=32, ckpt_sha256=digest)
    with pytest.raises(ValueError, match="must be 64 hex digits"):
        spectralgpt_vit_base(**TINY, img_size=32, ckpt_path=url, ckpt_sha256="abc")


class _BadReplies(_Handler):
    """/html/<name>: an error page with status 200; /short/<name>: a tenth of the file, whole."""

    def do_GET(self):
        if self.path.startswith("/html/"):
            data = b"<!DOCTYPE html><html><body>Rate limit exceeded</body></html>"
        elif self.path.startswith("/short/"):
            data = (Path(self.directory) / self.path.removeprefix("/short/")).read_bytes()
            data = data[: len(data) // 10]
        else:
            return super().do_GET()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        return None


def test_a_bad_file_served_whole_is_never_cached(tmp_path, monkeypatch, official_sd):
    folder = tmp_path / "served"
    folder.mkdir()
    write_official(folder / "model.pth", official_sd)
    handler = functools.partial(_BadReplies, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_port}"
    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(cache))
    try:
        with pytest.raises(
            DownloadError, match=r"html/model\.pth did not give a usable .*<!DOCTYPE"
        ):
            spectralgpt_vit_base(**TINY, img_size=32, ckpt_path=f"{base}/html/model.pth")
        with pytest.raises(DownloadError, match=r"short/model\.pth did not give .*ends early"):
            spectralgpt_vit_base(**TINY, img_size=32, ckpt_path=f"{base}/short/model.pth")
        assert [p for p in cache.rglob("*") if p.is_file()] == []  # not even a .part file
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_cached_file_that_no_longer_reads_is_removed(server, tmp_path, monkeypatch, official_sd):
    folder, base = server
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    write_official(folder / "model.pth", official_sd)
    url = f"{base}/model.pth"
    fetch_checkpoint(url)
    cached = cached_path(url)
    cached.write_bytes(cached.read_bytes()[:1000])  # damaged on disk after the download
    with pytest.raises(
        CheckpointError, match=rf"{cached}: .*cached download of {url} and was removed; run again"
    ):
        spectralgpt_vit_base(**TINY, img_size=32, ckpt_path=url)
    assert not cached.exists()
    model = spectralgpt_vit_base(**TINY, img_size=32, ckpt_path=url)  # the next run: afresh
    torch.testing.assert_close(model.norm.weight.data, official_sd["norm.weight"])


def test_the_report_is_a_warning_when_tensors_are_resized_or_missing_else_a_console_line(
    tmp_path, caplog, official_file
):
    logger = "terratorch_hsi_peft.backbones.checkpoint"
    console = "lightning.pytorch.utilities.rank_zero"  # what the terratorch command shows
    with caplog.at_level(logging.INFO):
        spectralgpt_vit_base(**TINY, img_size=128, ckpt_path=str(official_file))  # exact fit
        spectralgpt_vit_base(**TINY, img_size=32, ckpt_path=str(official_file))  # resized
    records = [(r.name, r.levelno) for r in caplog.records if r.name in (logger, console)]
    assert records == [(console, logging.INFO), (logger, logging.WARNING)]
    exact, resized = (r.getMessage() for r in caplog.records if r.name in (logger, console))
    assert exact.startswith(f"Checkpoint {official_file}") and "resized: none" in exact
    assert "pos_embed_spatial [1, 256, 24] -> [1, 16, 24]" in resized


@pytest.mark.slow
def test_terratorch_fit_loads_the_named_url_and_shows_the_report(
    server, tmp_path, monkeypatch, official_sd
):
    # issue 13 item 1 through the CLI: with v1 cached, a config naming v2 trained on v1's weights,
    # exit code 0, nothing on screen
    folder, base = server
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    for version, shift in (("v1", 0.0), ("v2", 1.0)):
        (folder / version).mkdir()
        write_official(folder / version / "model.pth", _variant(official_sd, shift))
    fetch_checkpoint(f"{base}/v1/model.pth")
    config = tmp_path / "fit.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            seed_everything: 0
            trainer:
              accelerator: cpu
              max_steps: 1
              limit_val_batches: 0
              num_sanity_val_steps: 0
              logger: false
              enable_checkpointing: false
              enable_progress_bar: false
              enable_model_summary: false
              default_root_dir: {tmp_path}
              callbacks:
                - class_path: terratorch_hsi_peft.callbacks.LoadPlugin
            data:
              class_path: terratorch.datamodules.dummy_datamodule.DummyDataModule
              init_args:
                {{batch_size: 2, num_workers: 0, train_samples: 2, val_samples: 2,
                  test_samples: 2, channels: 12, height: 32, width: 32, segmentation: true,
                  num_classes: 3}}
            model:
              class_path: terratorch.tasks.SemanticSegmentationTask
              init_args:
                model_factory: EncoderDecoderFactory
                loss: ce
                ignore_index: -1
                model_args:
                  backbone: spectralgpt_vit_base
                  backbone_ckpt_path: {base}/v2/model.pth
                  backbone_depth: {DEPTH}
                  backbone_embed_dim: {DIM}
                  backbone_num_heads: 2
                  backbone_img_size: 32
                  necks: [{{name: ReshapeTokensToImage}}]
                  decoder: FCNDecoder
                  decoder_channels: 8
                  num_classes: 3
            """
        )
    )
    output = terratorch(["fit", "--config", config], tmp_path, timeout=600)
    v2 = sha256sum(folder / "v2" / "model.pth")
    assert v2 != sha256sum(folder / "v1" / "model.pth")
    tensors = 6 + 16 * DEPTH  # patch embedding, 2 position tables, final norm; 8 Linears/norms
    assert f"(from {base}/v2/model.pth), sha256 {v2}: {tensors} tensors loaded" in output
    assert "pos_embed_spatial [1, 256, 24] -> [1, 16, 24]" in output


def test_a_checkpoint_named_with_digits_only_stays_a_path(tmp_path, monkeypatch, official_sd):
    # a CLI override leaves the string "2024"; read as a YAML int it is no path any more
    monkeypatch.chdir(tmp_path)
    write_official(tmp_path / "2024", official_sd)
    digest = sha256sum(tmp_path / "2024")
    model = spectralgpt_vit_base(**TINY, img_size=32, ckpt_path="2024", ckpt_sha256=digest)
    assert model.load_report.source == "2024" and model.load_report.sha256 == digest
