"""EMIT (NetCDF4), EnMAP (GeoTIFF + XML) and PRISMA (HDF-EOS5) products against what was written."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from terratorch_hsi_peft.products import Window, open_product
from terratorch_hsi_peft.products._h5 import band_selection
from terratorch_hsi_peft.products.emit import EmitProduct, emit_orthorectify
from terratorch_hsi_peft.products.enmap import EnmapProduct
from terratorch_hsi_peft.products.prisma import PrismaProduct


def _assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == np.float32
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    np.testing.assert_allclose(actual, expected, rtol=1e-6, equal_nan=True)


def test_emit_swath_values_bands_and_windows(tmp_path, fake_products):
    fake = fake_products.make_emit(tmp_path)
    with open_product(fake.path) as product:
        assert isinstance(product, EmitProduct)
        m = product.metadata
        assert product.shape == fake.stored.shape
        np.testing.assert_allclose(m.wavelengths, fake.wavelengths)
        np.testing.assert_allclose(m.fwhm, fake.fwhm)
        np.testing.assert_array_equal(m.bad_bands, fake.bad_bands)
        assert m.nodata == -9999.0
        assert m.crs is None and m.transform is None  # a swath
        _assert_same(product.read(), fake.expected)
        assert np.isnan(product.read()[:, fake.nodata_mask]).all()
        bands = np.array([7, 3, 3, 20])  # any order, repeats allowed
        _assert_same(product.read(Window(4, 2, 5, 3), bands), fake.expected[bands, 4:9, 2:5])


def test_band_selection_uses_a_slice_for_consecutive_bands():
    selection, reorder = band_selection(np.array([3, 4, 5, 6]))
    assert selection == slice(3, 7)
    np.testing.assert_array_equal(reorder, [0, 1, 2, 3])
    selection, reorder = band_selection(np.array([6, 2, 2, 9]))
    assert selection == [2, 6, 9]
    np.testing.assert_array_equal(np.array([2, 6, 9])[reorder], [6, 2, 2, 9])
    selection, reorder = band_selection(np.array([5, 4, 3]))
    assert selection == slice(3, 6)
    np.testing.assert_array_equal(np.arange(3, 6)[reorder], [5, 4, 3])


def test_emit_glt_kept_and_orthorectify(tmp_path, fake_products):
    fake = fake_products.make_emit(tmp_path)
    with open_product(fake.path) as product:
        extra = product.metadata.extra
    np.testing.assert_array_equal(extra["glt_x"], fake.extra["glt_x"])
    np.testing.assert_array_equal(extra["glt_y"], fake.extra["glt_y"])
    assert extra["geotransform"] == fake.extra["geotransform"]
    assert extra["ortho_crs"].to_epsg() == 4326
    assert extra["ortho_transform"].c == -120.0 and extra["ortho_transform"].e == -0.0005
    rows, cols = fake.stored.shape[1:]
    class_map = np.arange(rows * cols, dtype=np.int16).reshape(rows, cols)
    ortho = emit_orthorectify(class_map, extra["glt_x"], extra["glt_y"], fill=-1)
    assert ortho.shape == (cols + 2, rows + 2) and ortho.dtype == np.int16
    # The fixture's GLT rotates by 90 degrees: cell (1+i, 1+j) shows pixel (rows-1-j, i).
    for i in range(cols):
        for j in range(rows):
            assert ortho[1 + i, 1 + j] == class_map[rows - 1 - j, i]
    assert (ortho[0] == -1).all() and (ortho[:, -1] == -1).all()
    # Leading axes (class probabilities) follow the same lookup.
    probs = np.stack([class_map, class_map * 2]).astype(np.float32)
    np.testing.assert_array_equal(
        emit_orthorectify(probs, extra["glt_x"], extra["glt_y"], np.nan)[1, 1:-1, 1:-1],
        ortho[1:-1, 1:-1] * 2,
    )


def test_emit_orthorectify_rejects_a_glt_of_another_swath():
    glt = np.full((3, 3), 5)
    with pytest.raises(ValueError, match="different scenes"):
        emit_orthorectify(np.zeros((4, 4)), glt, glt, 0)
    with pytest.raises(ValueError, match="same shape"):
        emit_orthorectify(np.zeros((4, 4)), glt, glt[:2], 0)


def test_emit_layout_error(tmp_path, fake_products):
    fake = fake_products.make_prisma(tmp_path)
    with pytest.raises(ValueError, match="not an EMIT L2A reflectance file"):
        open_product(fake.path, format="emit")


@pytest.mark.parametrize("declare_nodata", [True, False])
def test_enmap_folder_xml_gain_and_nodata(tmp_path, fake_products, declare_nodata):
    fake = fake_products.make_enmap(tmp_path, declare_nodata=declare_nodata)
    with open_product(fake.path) as product:
        assert isinstance(product, EnmapProduct)
        m = product.metadata
        np.testing.assert_allclose(m.wavelengths, fake.wavelengths, atol=1e-4)
        np.testing.assert_allclose(m.fwhm, fake.fwhm)
        np.testing.assert_allclose(m.scale, 1e-4)
        assert m.nodata == -32768.0
        assert m.crs == fake_products.CRS_UTM and m.transform == fake_products.TRANSFORM
        _assert_same(product.read(), fake.expected)
        _assert_same(product.read(Window(1, 1, 3, 4), [2, 0]), fake.expected[[2, 0], 1:4, 1:5])
    # The image file itself opens too, with the XML found beside it.
    image = next(fake.path.glob("*SPECTRAL_IMAGE.TIF"))
    with open_product(image, format="enmap") as product:
        _assert_same(product.read(), fake.expected)


def test_enmap_without_xml_or_with_the_wrong_one(tmp_path, fake_products):
    fake = fake_products.make_enmap(tmp_path)
    xml = next(fake.path.glob("*METADATA.XML"))
    tree = ET.parse(xml)
    table = tree.getroot().find(".//bandCharacterisation")
    table.remove(table.findall("bandID")[-1])
    tree.write(xml)
    with pytest.raises(ValueError, match="lists 23 bands but the image has 24"):
        open_product(fake.path)
    xml.write_text("<level_X><specific>")
    with pytest.raises(ValueError, match=r"METADATA\.XML is not valid XML"):
        open_product(fake.path)
    xml.unlink()
    with pytest.raises(FileNotFoundError, match=r"no \*METADATA\.XML beside the EnMAP image"):
        open_product(fake.path)


def test_prisma_bands_sorted_scaled_and_gridded(tmp_path, fake_products):
    fake = fake_products.make_prisma(tmp_path)
    with open_product(fake.path) as product:
        assert isinstance(product, PrismaProduct)
        m = product.metadata
        assert m.bands == 15  # 8 + 10 slots less 3 unused (centre 0)
        np.testing.assert_allclose(m.wavelengths, fake.wavelengths)
        assert (np.diff(m.wavelengths) >= 0).all()
        np.testing.assert_array_equal(m.bad_bands, fake.bad_bands)
        assert m.wavelengths[m.bad_bands].tolist() == [1400.0]
        np.testing.assert_allclose(m.fwhm, 12.0)
        assert m.crs.to_epsg() == 32633
        assert m.transform.almost_equals(fake_products.TRANSFORM)
        _assert_same(product.read(), fake.expected)
        # VNIR and SWIR bands in one read, any order; a window.
        bands = np.array([14, 0, 6, 5])
        _assert_same(product.read(Window(2, 3, 6, 4), bands), fake.expected[bands, 2:8, 3:7])
        assert np.isnan(product.read()[:, fake.nodata_mask]).all()


def test_open_product_detects_each_layout(tmp_path, fake_products):
    makers = {
        "envi": fake_products.make_envi,
        "geotiff": fake_products.make_geotiff,
        "emit": fake_products.make_emit,
        "enmap": fake_products.make_enmap,
        "prisma": fake_products.make_prisma,
    }
    for name, make in makers.items():
        fake = make(tmp_path / name)
        with open_product(fake.path) as product:
            assert product.format_name == name
