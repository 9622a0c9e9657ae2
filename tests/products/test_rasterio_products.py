"""ENVI and GeoTIFF products through rasterio: values, windows, bands, nodata and metadata."""

from __future__ import annotations

import numpy as np
import pytest

from terratorch_hsi_peft.products import Window, open_product
from terratorch_hsi_peft.products.rasterio_product import EnviProduct, GeoTiffProduct


def _assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == np.float32
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    np.testing.assert_allclose(actual, expected, rtol=1e-6, equal_nan=True)


@pytest.mark.parametrize("interleave", ["bsq", "bil", "bip"])
@pytest.mark.parametrize("dtype", ["int16", "float32"])
def test_envi_values_equal_the_array_written(tmp_path, fake_products, interleave, dtype):
    gain = 1e-4 if dtype == "int16" else None
    fake = fake_products.make_envi(tmp_path, interleave, dtype, gain=gain)
    with open_product(fake.path) as product:
        assert isinstance(product, EnviProduct)
        assert product.shape == fake.stored.shape
        _assert_same(product.read(), fake.expected)


def test_envi_int16_with_gain_and_offset(tmp_path, fake_products):
    fake = fake_products.make_envi(tmp_path, "bil", "int16", gain=2e-4, offset=0.01)
    with open_product(fake.path) as product:
        np.testing.assert_allclose(product.metadata.scale, 2e-4)
        np.testing.assert_allclose(product.metadata.offset, 0.01)
        _assert_same(product.read(), fake.expected)


@pytest.mark.parametrize(
    "dtype", ["uint8", "uint16", "int32", "uint32", "int64", "uint64", "float64"]
)
def test_envi_other_data_types(tmp_path, fake_products, dtype):
    fake = fake_products.make_envi(tmp_path, "bip", dtype, gain=None, nodata=None)
    with open_product(fake.path) as product:
        assert product.metadata.extra["dtype"] == dtype
        _assert_same(product.read(), fake.expected)


def test_nodata_outside_the_data_type_marks_no_pixel(tmp_path, fake_products):
    # -9999 cast to uint8 wraps to 241: that real value must not become NaN.
    stored = np.full((3, 4, 5), 241, dtype=np.uint8)
    stored[1, 2, 3] = 7
    hdr = fake_products.write_envi(tmp_path / "u8.img", stored, "bsq", {"data ignore value": -9999})
    with open_product(hdr) as product:
        assert product.metadata.nodata == -9999
        _assert_same(product.read(), stored.astype(np.float32))


def test_envi_complex_data_refused(tmp_path, fake_products):
    stored = np.ones((2, 3, 4), dtype=np.complex64)
    hdr = fake_products.write_envi(tmp_path / "c.img", stored, "bsq", {})
    with pytest.raises(ValueError, match=r"complex-valued bands \(complex64\) are not reflectance"):
        open_product(hdr)


def test_envi_reflectance_scale_factor(tmp_path, fake_products):
    stored = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4) * 100
    hdr = fake_products.write_envi(
        tmp_path / "r.img", stored, "bil", {"reflectance scale factor": 10000}
    )
    with open_product(hdr) as product:
        _assert_same(product.read(), stored.astype(np.float32) / np.float32(10000))


def test_envi_windows_and_band_subsets(tmp_path, fake_products):
    fake = fake_products.make_envi(tmp_path, "bil", "int16")
    bands = np.array([20, 2, 7])
    window = Window(row=3, col=2, height=5, width=6)
    with open_product(fake.path) as product:
        rows, cols = window.slices()
        _assert_same(product.read(window, bands), fake.expected[bands][:, rows, cols])
        _assert_same(product.read(Window(11, 9, 1, 1)), fake.expected[:, 11:12, 9:10])
        with pytest.raises(ValueError, match="outside the 12x10 product"):
            product.read(Window(10, 0, 3, 1))


def test_envi_nodata_pixels_are_nan(tmp_path, fake_products):
    fake = fake_products.make_envi(tmp_path, "bsq", "int16")
    with open_product(fake.path) as product:
        assert product.metadata.nodata == -9999
        cube = product.read()
    assert np.isnan(cube[:, fake.nodata_mask]).all()
    assert not np.isnan(cube[:, ~fake.nodata_mask]).any()


def test_envi_metadata(tmp_path, fake_products):
    fake = fake_products.make_envi(tmp_path, "bsq", "int16")
    with open_product(fake.path) as product:
        m = product.metadata
        assert (m.bands, m.height, m.width) == fake.stored.shape
        np.testing.assert_allclose(m.wavelengths, fake.wavelengths, atol=1e-4)
        np.testing.assert_allclose(m.fwhm, fake.fwhm)
        np.testing.assert_array_equal(m.bad_bands, fake.bad_bands)
        np.testing.assert_array_equal(m.good_bands, np.flatnonzero(~fake.bad_bands))
        assert m.crs.to_epsg() == fake_products.CRS_UTM.to_epsg()
        assert m.transform == fake_products.TRANSFORM


def test_envi_micrometres_become_nanometres(tmp_path, fake_products):
    fake = fake_products.make_envi(tmp_path, units="Micrometers")
    with open_product(fake.path) as product:
        np.testing.assert_allclose(product.metadata.wavelengths, fake.wavelengths, atol=1e-3)
        np.testing.assert_allclose(product.metadata.fwhm, fake.fwhm, atol=1e-3)


@pytest.mark.parametrize("units", [None, "Micrometers"])
def test_envi_without_units_fwhm_takes_the_centres_factor(tmp_path, fake_products, units):
    # Without units, nm centres stay nm and so does a 10 nm FWHM (below 100, yet not in µm).
    fake = fake_products.make_envi(tmp_path, units=units)
    if units:
        text = fake.path.read_text().replace("wavelength units = Micrometers\n", "")
        fake.path.write_text(text)
    with open_product(fake.path) as product:
        np.testing.assert_allclose(product.metadata.wavelengths, fake.wavelengths, atol=1e-3)
        np.testing.assert_allclose(product.metadata.fwhm, fake.fwhm, atol=1e-3)


def test_envi_opened_by_binary_or_header_without_extension(tmp_path, fake_products):
    # AVIRIS-NG names the binary without an extension (ang..._corr_v2r2_img + .hdr).
    fake = fake_products.make_envi(tmp_path, "bil", name="ang_corr_img", suffix="")
    for path in (fake.path, fake.extra["binary"]):
        with open_product(path) as product:
            _assert_same(product.read(), fake.expected)


def test_envi_opens_under_terratorchs_gdal_settings(tmp_path, fake_products, monkeypatch):
    # `terratorch` sets this for every run; GDAL then does not list the folder and missed the
    # header beside the binary ("not recognized as being in a supported file format").
    monkeypatch.setenv("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR")
    fake = fake_products.make_envi(tmp_path, "bil")
    with open_product(fake.path) as product:
        _assert_same(product.read(), fake.expected)
        np.testing.assert_array_equal(product.metadata.bad_bands, fake.bad_bands)


def test_envi_without_wavelengths_or_map(tmp_path, fake_products):
    fake = fake_products.make_envi(tmp_path, with_wavelengths=False, map_info=False)
    with open_product(fake.path) as product:
        assert product.metadata.wavelengths is None
        assert product.metadata.crs is None


def test_envi_header_list_of_the_wrong_length(tmp_path, fake_products):
    fake = fake_products.make_envi(tmp_path)
    text = fake.path.read_text().replace("bbl = {1, 1,", "bbl = {1,")
    fake.path.write_text(text)
    with pytest.raises(ValueError, match="`bbl` lists 23 values for 24 bands"):
        open_product(fake.path)


def test_envi_header_without_binary(tmp_path, fake_products):
    fake = fake_products.make_envi(tmp_path)
    fake.extra["binary"].unlink()
    with pytest.raises(FileNotFoundError, match=r"no ENVI binary file beside this header"):
        open_product(fake.path)


@pytest.mark.parametrize("style", ["items", "descriptions"])
def test_geotiff_wavelengths_values_and_nodata(tmp_path, fake_products, style):
    fake = fake_products.make_geotiff(tmp_path, "float32", style=style)
    with open_product(fake.path) as product:
        assert isinstance(product, GeoTiffProduct)
        m = product.metadata
        np.testing.assert_allclose(m.wavelengths, fake.wavelengths, atol=1e-3)
        if style == "items":
            np.testing.assert_allclose(m.fwhm, fake.fwhm)
        assert m.nodata == -9999.0
        assert m.crs == fake_products.CRS_UTM
        assert m.transform == fake_products.TRANSFORM
        _assert_same(product.read(), fake.expected)
        _assert_same(product.read(Window(2, 1, 4, 3), [0, 5]), fake.expected[[0, 5], 2:6, 1:4])


def test_geotiff_int16_with_scale_and_offset(tmp_path, fake_products):
    fake = fake_products.make_geotiff(tmp_path, "int16", scale=1e-4, offset=-0.1, nodata=-32768)
    with open_product(fake.path) as product:
        _assert_same(product.read(), fake.expected)


def test_wavelength_units_that_are_not_lengths(tmp_path, fake_products):
    fake = fake_products.make_envi(tmp_path, units="Wavenumber")
    with pytest.raises(ValueError, match="wavelength units 'Wavenumber' are not nanometres"):
        open_product(fake.path)


def test_geotiff_without_wavelengths(tmp_path, fake_products):
    fake = fake_products.make_geotiff(tmp_path, style="none")
    with open_product(fake.path) as product:
        assert product.metadata.wavelengths is None


def test_unknown_format_and_layout(tmp_path):
    odd = tmp_path / "scene.xyz"
    odd.write_bytes(b"\0")
    with pytest.raises(ValueError, match=r"cannot tell the product format.*pass format="):
        open_product(odd)
    with pytest.raises(ValueError, match=r"Unknown product format 'hdf4'.*'envi'"):
        open_product(odd, format="hdf4")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_product(tmp_path / "missing.hdr")
