"""Benchmark scene classes: the real Indian Pines files, fakes of every other scene's layout."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import scipy.io

from terratorch_hsi_peft.datasets import (
    SCENES,
    GenericScene,
    IndianPines,
    SalinasA,
    load_scene,
)
from terratorch_hsi_peft.utils.download import sha256sum

INDIAN_PINES_COUNTS = [
    46,
    1428,
    830,
    237,
    483,
    730,
    28,
    478,
    20,
    972,
    2455,
    593,
    205,
    1265,
    386,
    93,
]


def test_indian_pines_real_files(shared_data):
    root = shared_data / "indian_pines"
    scene = IndianPines(root)  # checksum=True: sha256 of both files
    assert scene.num_classes == 16 and scene.num_bands == 200 and scene.shape == (145, 145)
    assert (scene.labels > 0).sum() == 10_249
    assert scene.class_counts().tolist() == INDIAN_PINES_COUNTS
    assert scene.image.dtype == np.float32 and scene.labels.dtype == np.int64
    raw = scipy.io.loadmat(root / "Indian_pines_corrected.mat")["indian_pines_corrected"]
    np.testing.assert_array_equal(scene.image, raw.astype(np.float32))
    for spec in IndianPines.files():
        assert sha256sum(root / spec.filename) == spec.sha256
        assert (root / spec.filename).stat().st_size == spec.size
    assert scene.wavelengths.shape == (200,) and scene.gsd == 20.0


@pytest.mark.parametrize("name", sorted(SCENES))
def test_fake_scene_of_real_layout_loads(name, tmp_path, fakes):
    scene_cls = SCENES[name]
    cube, raw_labels = fakes.write_fake_scene(scene_cls, tmp_path)
    scene = load_scene(name, tmp_path, checksum=False)
    assert type(scene) is scene_cls and scene.name == name
    np.testing.assert_array_equal(scene.image, cube.astype(np.float32))
    assert scene.num_bands == scene_cls.IMAGE_FILE.shape[2] == len(scene.wavelengths)
    assert scene.num_classes == len(scene_cls.CLASS_NAMES) == int(scene.labels.max())
    assert (scene.class_counts() > 0).all()
    # band centres are increasing and inside the sensor's range
    assert np.all(np.diff(scene.wavelengths) > 0)
    assert scene.wavelengths[0] > 350 and scene.wavelengths[-1] < 2600
    # unlabelled pixels stay unlabelled
    np.testing.assert_array_equal(scene.labels == 0, raw_labels == 0)


@pytest.mark.parametrize("name", sorted(SCENES))
def test_checksum_rejects_a_file_that_is_not_the_published_one(name, tmp_path, fakes):
    fakes.write_fake_scene(SCENES[name], tmp_path)
    with pytest.raises(ValueError, match=r"checksum=False") as info:
        load_scene(name, tmp_path)
    assert str(tmp_path / SCENES[name].IMAGE_FILE.filename) in str(info.value)


def test_salinas_a_raw_codes_map_to_one_to_six(tmp_path, fakes):
    _, raw = fakes.write_fake_scene(SalinasA, tmp_path)
    scene = SalinasA(tmp_path, checksum=False)
    expected = {0: 0, 1: 1, 10: 2, 11: 3, 12: 4, 13: 5, 14: 6}
    np.testing.assert_array_equal(scene.labels, np.vectorize(expected.get)(raw))
    scipy.io.savemat(tmp_path / "SalinasA_gt.mat", {"salinasA_gt": np.full(raw.shape, 5, np.uint8)})
    with pytest.raises(ValueError, match=r"SalinasA_gt\.mat holds label value\(s\) \[5\]"):
        SalinasA(tmp_path, checksum=False)


def test_missing_file_names_it_and_the_download_hint(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        IndianPines(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "Indian_pines_corrected.mat") in message
    assert "download=True" in message and IndianPines.IMAGE_FILE.url in message


def test_truncated_file_is_a_clear_error(tmp_path, shared_data):
    for spec in IndianPines.files():
        shutil.copy(shared_data / "indian_pines" / spec.filename, tmp_path / spec.filename)
    cube = tmp_path / "Indian_pines_corrected.mat"
    cube.write_bytes(cube.read_bytes()[:100_000])
    with pytest.raises(ValueError, match=r"truncated or corrupt") as info:
        IndianPines(tmp_path, checksum=False)
    assert str(cube) in str(info.value)


def test_modified_file_fails_the_sha256(tmp_path, shared_data):
    for spec in IndianPines.files():
        shutil.copy(shared_data / "indian_pines" / spec.filename, tmp_path / spec.filename)
    gt = scipy.io.loadmat(tmp_path / "Indian_pines_gt.mat")["indian_pines_gt"]
    gt[0, 0] = 3
    scipy.io.savemat(tmp_path / "Indian_pines_gt.mat", {"indian_pines_gt": gt})
    with pytest.raises(ValueError, match=r"Indian_pines_gt\.mat: sha256 does not match"):
        IndianPines(tmp_path)
    assert IndianPines(tmp_path, checksum=False).labels[0, 0] == 3


def test_wrong_band_count_is_rejected_even_without_checksum(tmp_path, fakes):
    fakes.write_fake_scene(SalinasA, tmp_path)
    scipy.io.savemat(
        tmp_path / "SalinasA_corrected.mat",
        {"salinasA_corrected": np.zeros((12, 10, 200), np.int16)},
    )
    with pytest.raises(ValueError, match=r"has 200 bands, but Salinas-A has 204"):
        SalinasA(tmp_path, checksum=False)


def test_wrong_variable_name_lists_the_variables(tmp_path, fakes):
    fakes.write_fake_scene(SalinasA, tmp_path)
    scipy.io.savemat(tmp_path / "SalinasA_gt.mat", {"gt": np.zeros((12, 10), np.uint8)})
    with pytest.raises(ValueError, match=r"no numeric variable 'salinasA_gt'; it holds: gt"):
        SalinasA(tmp_path, checksum=False)


def test_load_scene_names_and_errors(tmp_path, shared_data):
    root = shared_data / "indian_pines"
    for name in ("indian_pines", "IndianPines", "Indian-Pines", IndianPines):
        assert isinstance(load_scene(name, root), IndianPines)
    generic = load_scene("generic", shared_data, image_path="samson/samson_1.mat")
    assert isinstance(generic, GenericScene) and generic.labels is None
    with pytest.raises(ValueError, match=r"Unknown scene 'houston'.*indian_pines"):
        load_scene("houston", root)
    with pytest.raises(TypeError, match=r"does not take \['image_path'\]"):
        load_scene("indian_pines", root, image_path="x.mat")
    with pytest.raises(ValueError, match=r"no download address"):
        load_scene("generic", tmp_path, download=True, image_path="x.mat")
    with pytest.raises(TypeError, match=r"needs image_path"):
        load_scene("generic", tmp_path)
