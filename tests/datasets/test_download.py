"""download=True against a loopback HTTP server: good files, bad files, cut transfers."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

from terratorch_hsi_peft.datasets import IndianPines, Salinas
from terratorch_hsi_peft.utils.download import DownloadError


def _serve(monkeypatch, scene, base_url, prefix="", **changes):
    """Point the scene's URL table at the loopback server (``prefix``: a path on it)."""
    for attr in ("IMAGE_FILE", "LABEL_FILE"):
        spec = getattr(scene, attr)
        url = f"{base_url}/{prefix}{spec.filename}"
        monkeypatch.setattr(scene, attr, dataclasses.replace(spec, url=url, **changes))


def _link_indian_pines(served, shared_data):
    for spec in IndianPines.files():
        os.symlink(shared_data / "indian_pines" / spec.filename, served / spec.filename)


def test_download_good_files_verified_by_sha256(monkeypatch, http_root, shared_data, tmp_path):
    base_url, served = http_root
    _link_indian_pines(served, shared_data)
    _serve(monkeypatch, IndianPines, base_url)
    root = tmp_path / "data"
    scene = IndianPines(root, download=True)
    assert scene.class_counts().sum() == 10_249
    assert sorted(p.name for p in root.iterdir()) == [
        "Indian_pines_corrected.mat",
        "Indian_pines_gt.mat",
    ]
    for spec in IndianPines.files():
        assert (root / spec.filename).read_bytes() == (served / spec.filename).read_bytes()
    # a second load uses the files on disk: the server is not needed any more
    _serve(monkeypatch, IndianPines, "http://127.0.0.1:9")
    assert IndianPines(root, download=True).shape == (145, 145)


def test_download_without_digest_checks_the_variable(monkeypatch, http_root, tmp_path, fakes):
    base_url, served = http_root
    cube, _ = fakes.write_fake_scene(Salinas, served)
    _serve(monkeypatch, Salinas, base_url)
    root = tmp_path / "data"
    # the fake is 12 x 10, not the published 512 x 217: rejected, nothing kept
    with pytest.raises(
        DownloadError, match=r"is not the expected Salinas_corrected\.mat.*512, 217"
    ):
        Salinas(root, download=True)
    assert not root.exists() or list(root.iterdir()) == []
    # with the published shape recorded as the fake's, the same download is accepted
    shape = {"IMAGE_FILE": (12, 10, 204), "LABEL_FILE": (12, 10)}
    for attr, value in shape.items():
        monkeypatch.setattr(Salinas, attr, dataclasses.replace(getattr(Salinas, attr), shape=value))
    np.testing.assert_array_equal(Salinas(root, download=True).image, cube.astype(np.float32))


def test_wrong_checksum_leaves_nothing(monkeypatch, http_root, shared_data, tmp_path):
    base_url, served = http_root
    _link_indian_pines(served, shared_data)
    _serve(monkeypatch, IndianPines, base_url, sha256="0" * 64)
    root = tmp_path / "data"
    with pytest.raises(
        DownloadError,
        match=r"sha256 [0-9a-f]{64} does not match the expected 0{64}\. Either the file is corrupt"
        r".*Or the digest is wrong: compare it with the sha256 the publisher gives",
    ):
        IndianPines(root, download=True)
    assert list(root.iterdir()) == []


def test_wrong_size_leaves_nothing(monkeypatch, http_root, shared_data, tmp_path):
    base_url, served = http_root
    _link_indian_pines(served, shared_data)
    _serve(monkeypatch, IndianPines, base_url, size=123)
    root = tmp_path / "data"
    with pytest.raises(DownloadError, match=r"expected 123 bytes, got 5953527"):
        IndianPines(root, download=True)
    assert list(root.iterdir()) == []


def test_interrupted_transfer_leaves_nothing(monkeypatch, http_root, shared_data, tmp_path):
    base_url, served = http_root
    _link_indian_pines(served, shared_data)
    _serve(monkeypatch, IndianPines, base_url, prefix="cut/")
    root = tmp_path / "data"
    with pytest.raises(DownloadError, match=r"cut short: got 2976763 of 5953527 bytes"):
        IndianPines(root, download=True)
    assert list(root.iterdir()) == []


def test_missing_remote_file_is_a_clear_error(monkeypatch, http_root, tmp_path):
    base_url, _ = http_root
    _serve(monkeypatch, IndianPines, base_url)
    with pytest.raises(DownloadError, match=r"Could not download .*Indian_pines_corrected\.mat"):
        IndianPines(tmp_path / "data", download=True)
