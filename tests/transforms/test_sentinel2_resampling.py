"""Sentinel-2 band simulation on synthetic spectra of known shape."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from terratorch_hsi_peft.transforms import SENTINEL2_BANDS, BandRoute, sentinel2_weights

AVIRIS = np.arange(400.0, 2501.0, 10.0)  # 211 channels, 10 nm apart
ROSIS = np.linspace(430.0, 860.0, 103)
CENTERS = np.array([b.center for b in SENTINEL2_BANDS])
SIGMAS = np.array([b.fwhm for b in SENTINEL2_BANDS]) / (2 * math.sqrt(2 * math.log(2)))


def test_band_table_is_spectralgpt_order():
    names = [b.name for b in SENTINEL2_BANDS]
    assert names == ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12"]


def test_constant_spectrum_gives_the_constant():
    weights, missing = sentinel2_weights(AVIRIS)
    assert missing == []
    np.testing.assert_allclose(weights @ np.full(AVIRIS.size, 0.37), 0.37, rtol=1e-12)


def test_linear_spectrum_gives_the_line_at_band_centre():
    weights, _ = sentinel2_weights(AVIRIS)
    spectrum = 0.1 + 2e-4 * AVIRIS
    # Exact for a continuous symmetric response; channels 10 nm apart cost at most ~0.2 nm.
    np.testing.assert_allclose(weights @ spectrum, 0.1 + 2e-4 * CENTERS, atol=2e-4 * 0.2)


def test_quadratic_spectrum_reveals_the_response_width():
    # E[(l - c)^2] = sigma^2 under a Gaussian response: checks FWHM -> sigma, not only centring.
    fine = np.arange(300.0, 2700.0, 1.0)
    weights, _ = sentinel2_weights(fine)
    simulated = weights @ (fine - 1000.0) ** 2
    expected = (CENTERS - 1000.0) ** 2 + SIGMAS**2
    np.testing.assert_allclose(simulated, expected, rtol=1e-3)


def test_channel_order_does_not_matter():
    order = np.random.default_rng(0).permutation(AVIRIS.size)
    weights, _ = sentinel2_weights(AVIRIS)
    shuffled, _ = sentinel2_weights(AVIRIS[order])
    np.testing.assert_allclose(shuffled, weights[:, order])


def test_gap_in_sensor_coverage_is_not_filled():
    # Remove 1500-1700 nm: B11 (1614 nm) loses most of its response and must count as missing.
    gappy = AVIRIS[(AVIRIS < 1500) | (AVIRIS > 1700)]
    with pytest.warns(UserWarning, match="B11"):
        weights, missing = sentinel2_weights(gappy)
    assert missing == ["B11"]
    assert not weights[10].any()


def test_rosis_has_no_swir_zero_policy():
    with pytest.warns(UserWarning, match=r"B9, B11, B12 .*set to zero"):
        weights, missing = sentinel2_weights(ROSIS, missing_bands="zero")
    assert missing == ["B9", "B11", "B12"]
    assert not weights[9:].any()
    np.testing.assert_allclose(weights[:9].sum(axis=1), 1.0)


def test_rosis_nearest_policy_copies_the_edge_channel():
    with pytest.warns(UserWarning, match="nearest"):
        weights, _ = sentinel2_weights(ROSIS, missing_bands="nearest")
    for row in (9, 10, 11):
        assert weights[row, -1] == 1.0 and weights[row].sum() == 1.0


def test_rosis_error_policy_names_bands_and_fixes():
    with pytest.raises(ValueError, match=r"B9, B11, B12.*missing_bands"):
        sentinel2_weights(ROSIS, missing_bands="error")


@pytest.mark.parametrize(
    ("wavelengths", "kwargs", "message"),
    [
        (AVIRIS / 1000, {}, "micrometres"),
        (np.array([500.0, 500.0, 600.0]), {}, "distinct"),
        (AVIRIS, {"missing_bands": "drop"}, "policy"),
        (AVIRIS, {"min_coverage": 0.0}, "min_coverage"),
        (np.array([500.0]), {}, "two sensor channels"),
    ],
)
def test_bad_arguments_are_explained(wavelengths, kwargs, message):
    with pytest.raises(ValueError, match=message):
        sentinel2_weights(wavelengths, **kwargs)


def test_sentinel2_route_zero_band_reads_as_zero_after_standardisation():
    rng = np.random.default_rng(0)
    pixels = rng.normal(1000, 50, size=(300, ROSIS.size))
    with pytest.warns(UserWarning):
        route = BandRoute.fit("sentinel2", pixels, wavelengths=ROSIS)
    assert route.band_names[-1] == "B12" and route.num_bands_out == 12
    out = route(torch.from_numpy(pixels.T[:, :, None]).float())
    assert torch.all(out[9:] == 0)
    np.testing.assert_allclose(out[:9, :, 0].mean(dim=1).numpy(), 0.0, atol=1e-4)
    np.testing.assert_allclose(out[:9, :, 0].std(dim=1, unbiased=False).numpy(), 1.0, rtol=1e-4)
