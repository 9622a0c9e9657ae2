"""ProductScene: metadata-driven bands, nodata masking, labels from rasters and polygons."""

from __future__ import annotations

import numpy as np
import pytest

from terratorch_hsi_peft.datamodules import HyperspectralPatchDataModule
from terratorch_hsi_peft.datasets import ProductScene, load_scene


def _datamodule(scene, **kwargs) -> HyperspectralPatchDataModule:
    options = {
        "split": {"protocol": "per_class", "seed": 0, "train_size": 0.5, "val_size": 0.2},
        "band_route": "sentinel2",
        "patch_size": 3,
        "img_size": 8,
    }
    return HyperspectralPatchDataModule(scene=scene, **{**options, **kwargs})


def test_envi_scene_keeps_good_bands_wavelengths_and_masks_nodata(tmp_path, fake_products):
    fake = fake_products.make_envi(tmp_path, "bil", "int16")
    scene = ProductScene(fake.path)
    good = np.flatnonzero(~fake.bad_bands)
    np.testing.assert_array_equal(scene.band_indices, good)
    assert scene.num_bands == good.size == 21
    np.testing.assert_allclose(scene.wavelengths, fake.wavelengths[good], atol=1e-4)
    np.testing.assert_array_equal(scene.valid_mask, ~fake.nodata_mask)
    expected = fake.expected[good]
    valid = ~fake.nodata_mask
    np.testing.assert_allclose(scene.image[valid], expected[:, valid].T, rtol=1e-6)
    # Nodata pixels hold each band's mean over the valid pixels, not -9999 or NaN.
    np.testing.assert_allclose(
        scene.image[fake.nodata_mask][0], expected[:, valid].mean(axis=1), rtol=1e-5
    )
    assert scene.gsd == 30.0 and scene.crs.to_epsg() == 32633
    assert not scene.has_labels
    assert scene.name == "scene"  # not "scene.hdr": map writers append suffixes to it
    every = ProductScene(fake.path, drop_bad_bands=False)
    assert every.num_bands == 24 and every.wavelengths.size == 24


def test_label_raster_on_the_grid_and_nodata_unlabelled(tmp_path, fake_products):
    fake = fake_products.make_envi(tmp_path, "bsq", "int16")
    labels = fake_products.fake_labels()
    path = fake_products.write_label_raster(tmp_path / "labels.tif", labels)
    scene = ProductScene(fake.path, labels=path, class_names=["a", "b", "c"])
    expected = np.where(fake.nodata_mask, 0, labels)
    np.testing.assert_array_equal(scene.labels, expected)
    assert labels[fake.nodata_mask].any()  # the fixture labels some nodata pixels
    assert scene.class_names == ["a", "b", "c"]


def test_label_raster_off_the_grid(tmp_path, fake_products):
    fake = fake_products.make_envi(tmp_path)
    labels = fake_products.fake_labels()
    small = fake_products.write_label_raster(tmp_path / "small.tif", labels[:-1])
    with pytest.raises(ValueError, match=r"small\.tif is 11x10 pixels but the product .* 12x10"):
        ProductScene(fake.path, labels=small)
    shifted = fake_products.write_label_raster(
        tmp_path / "shifted.tif",
        labels,
        transform=fake_products.Affine(30.0, 0.0, 500030.0, 0.0, -30.0, 4100000.0),
    )
    with pytest.raises(ValueError, match=r"shifted\.tif has transform .*write them on the product"):
        ProductScene(fake.path, labels=shifted)


@pytest.mark.parametrize("wgs84", [False, True])
def test_label_polygons_rasterised_on_the_grid(tmp_path, fake_products, wgs84):
    fake = fake_products.make_envi(tmp_path)
    boxes = [((2, 1, 6, 4), "water"), ((6, 5, 12, 9), "forest"), ((1, 6, 3, 10), "water")]
    path = fake_products.write_label_polygons(tmp_path / "labels.geojson", boxes, wgs84=wgs84)
    scene = ProductScene(fake.path, labels=path)
    assert scene.class_names == ["forest", "water"]  # names sorted
    expected = np.zeros(fake_products.SHAPE, dtype=np.int64)
    expected[2:6, 1:4] = 2
    expected[6:12, 5:9] = 1
    expected[1:3, 6:10] = 2
    expected[fake.nodata_mask] = 0
    np.testing.assert_array_equal(scene.labels, expected)
    # Integer codes, and class names given in another order.
    named = ProductScene(fake.path, labels=path, class_names=["water", "forest"])
    np.testing.assert_array_equal(named.labels, np.where(expected > 0, 3 - expected, 0))


def test_label_polygons_errors(tmp_path, fake_products):
    fake = fake_products.make_envi(tmp_path)
    path = fake_products.write_label_polygons(tmp_path / "l.geojson", [((0, 0, 4, 4), 1)])
    with pytest.raises(ValueError, match="have no 'kind' property; set label_attribute"):
        ProductScene(fake.path, labels=path, label_attribute="kind")
    with pytest.raises(ValueError, match=r"class name\(s\) \['x'\] are not in class_names"):
        named = fake_products.write_label_polygons(tmp_path / "n.geojson", [((0, 0, 4, 4), "x")])
        ProductScene(fake.path, labels=named, class_names=["a"])
    far = tmp_path / "far.geojson"
    far.write_text(path.read_text().replace('"EPSG:32633"', '"EPSG:32610"'))
    with pytest.raises(ValueError, match=r"none of its 1 polygon.*check the polygons' CRS"):
        ProductScene(fake.path, labels=far)
    emit = fake_products.make_emit(tmp_path / "emit")
    with pytest.raises(ValueError, match=r"without a map grid .*give a label raster"):
        ProductScene(emit.path, labels=path)


def test_sentinel2_route_from_product_wavelengths_never_fits_nodata(tmp_path, fake_products):
    fake = fake_products.make_envi(tmp_path, "bip", "int16")
    labels = fake_products.write_label_raster(tmp_path / "labels.tif", fake_products.fake_labels())
    scene = ProductScene(fake.path, labels=labels)
    dm = _datamodule(scene)
    route = dm.route  # no wavelengths in the config: the product's are used
    assert route.route == "sentinel2" and route.num_bands_in == 21
    nodata = np.flatnonzero(fake.nodata_mask.ravel())
    split = dm.split
    for part in (split.train, split.val, split.test):
        assert not np.isin(part, nodata).any()
    # The route's mean is that of the training pixels, all valid ones.
    pixels = scene.image.reshape(-1, scene.num_bands)[split.train]
    np.testing.assert_allclose(route.mean.numpy(), pixels.mean(axis=0), rtol=1e-5)


def test_sentinel2_route_needs_wavelengths(tmp_path, fake_products):
    fake = fake_products.make_envi(tmp_path, with_wavelengths=False)
    labels = fake_products.write_label_raster(tmp_path / "labels.tif", fake_products.fake_labels())
    dm = _datamodule(ProductScene(fake.path, labels=labels))
    with pytest.raises(ValueError, match="'sentinel2' needs the sensor's band wavelengths"):
        dm.route  # noqa: B018


@pytest.mark.parametrize("protocol", ["per_class", "spatially_disjoint"])
def test_split_protocols_on_a_product(tmp_path, fake_products, protocol):
    fake = fake_products.make_envi(tmp_path, shape=(24, 20))
    labels = fake_products.fake_labels((24, 20))
    fake_products.write_label_raster(tmp_path / "labels.tif", labels)
    scene = load_scene("product", tmp_path, path=fake.path.name, labels="labels.tif")
    assert isinstance(scene, ProductScene) and scene.num_classes == 3
    split_args = {"protocol": protocol, "seed": 0}
    if protocol == "spatially_disjoint":
        split_args.update(block_size=4)
    dm = _datamodule(scene, split=split_args, band_route="pca", num_components=3)
    split = dm.split
    assert split.train.size and split.test.size
    nodata = np.flatnonzero(fake_products.nodata_pixels((24, 20)).ravel())
    assert not np.isin(np.concatenate([split.train, split.val, split.test]), nodata).any()


@pytest.mark.parametrize("maker", ["make_emit", "make_enmap", "make_prisma", "make_geotiff"])
def test_scene_from_each_format(tmp_path, fake_products, maker):
    fake = getattr(fake_products, maker)(tmp_path)
    scene = ProductScene(fake.path)
    good = np.flatnonzero(~fake.bad_bands)
    assert scene.num_bands == good.size
    np.testing.assert_allclose(scene.wavelengths, fake.wavelengths[good], atol=1e-3)
    np.testing.assert_array_equal(scene.valid_mask, ~fake.nodata_mask)
    valid = ~fake.nodata_mask
    np.testing.assert_allclose(scene.image[valid], fake.expected[good][:, valid].T, rtol=1e-6)
