"""GenericScene: every supported file format, the pixels-as-columns layout, and bad input."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import rasterio
import scipy.io
from affine import Affine

from terratorch_hsi_peft.datasets import GenericScene


@pytest.fixture
def cube_and_labels():
    rng = np.random.default_rng(0)
    cube = rng.integers(0, 1000, size=(7, 5, 6)).astype(np.uint16)
    labels = (np.arange(35).reshape(7, 5) % 4).astype(np.uint8)  # 0..3
    return cube, labels


def _write_v73(path, **arrays):
    # MATLAB v7.3 writes column-major HDF5 after a 512-byte text header: a MATLAB (H, W, C)
    # array is an HDF5 (C, W, H) dataset
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, array in arrays.items():
            f.create_dataset(name, data=array.T)
    with open(path, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: test HDF5 schema 1.00 .")


def _write_geotiff(path, array):
    bands = array[..., None] if array.ndim == 2 else array
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=bands.shape[0],
        width=bands.shape[1],
        count=bands.shape[2],
        dtype=bands.dtype.name,
        transform=Affine(2.0, 0.0, 500_000.0, 0.0, -2.0, 4_000_000.0),  # 2 m pixels
    ) as dst:
        dst.write(np.moveaxis(bands, -1, 0))


@pytest.mark.parametrize("fmt", ["mat_v5", "mat_v73", "npy", "geotiff"])
def test_every_format_gives_the_same_scene(fmt, tmp_path, cube_and_labels):
    cube, labels = cube_and_labels
    image_path, label_path = tmp_path / "cube", tmp_path / "gt"
    if fmt == "mat_v5":
        image_path, label_path = image_path.with_suffix(".mat"), label_path.with_suffix(".mat")
        scipy.io.savemat(image_path, {"cube": cube, "extra_vector": np.arange(3)})
        scipy.io.savemat(label_path, {"gt": labels})
    elif fmt == "mat_v73":
        image_path, label_path = image_path.with_suffix(".mat"), label_path.with_suffix(".mat")
        _write_v73(image_path, cube=cube)
        _write_v73(label_path, gt=labels)
    elif fmt == "npy":
        image_path, label_path = image_path.with_suffix(".npy"), label_path.with_suffix(".npy")
        np.save(image_path, cube)
        np.save(label_path, labels)
    else:
        image_path, label_path = image_path.with_suffix(".tif"), label_path.with_suffix(".tif")
        _write_geotiff(image_path, cube)
        _write_geotiff(label_path, labels)
    wavelengths = np.linspace(450, 950, 6)
    scene = GenericScene(image_path, label_path, wavelengths=wavelengths, gsd=2.0)
    np.testing.assert_array_equal(scene.image, cube.astype(np.float32))
    np.testing.assert_array_equal(scene.labels, labels.astype(np.int64))
    assert scene.class_names == ["class_1", "class_2", "class_3"]
    assert scene.name == "cube" and scene.gsd == 2.0 and scene.shape == (7, 5)
    np.testing.assert_array_equal(scene.wavelengths, wavelengths)


def test_scene_without_labels_is_for_prediction_only(tmp_path, cube_and_labels):
    np.save(tmp_path / "cube.npy", cube_and_labels[0])
    scene = GenericScene(tmp_path / "cube.npy", name="field")
    assert scene.labels is None and not scene.has_labels and scene.num_classes == 0
    with pytest.raises(ValueError, match=r"no labels; it can only be predicted on"):
        scene.class_counts()


@pytest.mark.parametrize(
    ("folder", "file", "variable", "bands"),
    [("jasper_ridge", "jasperRidge2_R198.mat", "Y", 198), ("samson", "samson_1.mat", "V", 156)],
)
def test_pixels_as_columns_layout_on_real_files(shared_data, folder, file, variable, bands):
    path = shared_data / folder / file
    raw = scipy.io.loadmat(path)
    rows, cols = int(raw["nRow"].item()), int(raw["nCol"].item())
    scene = GenericScene(path)
    assert scene.shape == (rows, cols) and scene.num_bands == bands and scene.labels is None
    matrix = raw[variable].astype(np.float32)
    for k in (0, 1, rows, rows * cols - 1, 4321):  # pixel k is at (k % nRow, k // nRow)
        np.testing.assert_array_equal(scene.image[k % rows, k // rows], matrix[:, k])
    assert np.array_equal(GenericScene(path, image_key=variable).image, scene.image)


def test_ambiguous_mat_lists_its_variables(tmp_path, cube_and_labels):
    cube = cube_and_labels[0]
    scipy.io.savemat(tmp_path / "two.mat", {"a": cube, "b": cube[:, :, :3]})
    with pytest.raises(
        ValueError, match=r"cannot tell which variable.*a \(7, 5, 6\), b \(7, 5, 3\)"
    ):
        GenericScene(tmp_path / "two.mat")
    assert GenericScene(tmp_path / "two.mat", image_key="b").num_bands == 3


def test_size_mismatch_names_both_files(tmp_path, cube_and_labels):
    cube, labels = cube_and_labels
    np.save(tmp_path / "cube.npy", cube)
    np.save(tmp_path / "gt.npy", labels[:6])
    with pytest.raises(ValueError, match=r"gt\.npy has shape \(6, 5\) but .*cube\.npy is 7x5"):
        GenericScene(tmp_path / "cube.npy", tmp_path / "gt.npy")


def test_nan_in_cube_is_rejected(tmp_path, cube_and_labels):
    cube = cube_and_labels[0].astype(np.float32)
    cube[2, 3, 1] = np.nan
    cube[4, 0, 0] = np.inf
    np.save(tmp_path / "cube.npy", cube)
    with pytest.raises(ValueError, match=r"cube\.npy: 2 pixel\(s\) hold NaN or inf.*\(2, 3\)"):
        GenericScene(tmp_path / "cube.npy")


def test_label_outside_the_class_list(tmp_path, cube_and_labels):
    cube, labels = cube_and_labels
    np.save(tmp_path / "cube.npy", cube)
    np.save(tmp_path / "gt.npy", labels)
    with pytest.raises(ValueError, match=r"gt\.npy holds label value\(s\) \[3\] outside 0\.\.2"):
        GenericScene(tmp_path / "cube.npy", tmp_path / "gt.npy", class_names=["a", "b"])
    np.save(tmp_path / "neg.npy", labels.astype(np.int16) - 1)
    with pytest.raises(ValueError, match=r"neg\.npy holds label value\(s\) \[-1\]"):
        GenericScene(tmp_path / "cube.npy", tmp_path / "neg.npy")


def test_missing_and_truncated_files(tmp_path, cube_and_labels):
    with pytest.raises(FileNotFoundError, match=r"nothing\.npy does not exist"):
        GenericScene(tmp_path / "nothing.npy")
    np.save(tmp_path / "cube.npy", cube_and_labels[0])
    scipy.io.savemat(tmp_path / "cube.mat", {"cube": cube_and_labels[0]})
    for name in ("cube.npy", "cube.mat"):
        path = tmp_path / name
        path.write_bytes(path.read_bytes()[:-50])
        with pytest.raises(ValueError, match=rf"{name} could not be read.*truncated or corrupt"):
            GenericScene(path)


def test_wrong_dimensions_and_suffix(tmp_path, cube_and_labels):
    np.save(tmp_path / "flat.npy", cube_and_labels[1])
    with pytest.raises(ValueError, match=r"flat\.npy: expected a cube \(H, W, bands\)"):
        GenericScene(tmp_path / "flat.npy")
    (tmp_path / "cube.hdr").write_text("ENVI")
    with pytest.raises(ValueError, match=r"unsupported file type '\.hdr'"):
        GenericScene(tmp_path / "cube.hdr")
    np.save(tmp_path / "cube.npy", cube_and_labels[0])
    with pytest.raises(ValueError, match=r"6 wavelengths|2 wavelengths given for a cube of 6"):
        GenericScene(tmp_path / "cube.npy", wavelengths=[500.0, 600.0])
