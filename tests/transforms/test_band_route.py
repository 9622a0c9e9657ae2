"""Band routes: standardisation and PCA against independent float64 / scikit-learn references."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from terratorch_hsi_peft.transforms import BandRoute


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(5, 30))
    # Correlated bands on very different scales, like raw sensor counts.
    return rng.normal(size=(400, 5)) @ mixing * rng.uniform(10, 500, 30) + rng.uniform(0, 9e3, 30)


def _apply(route: BandRoute, x: np.ndarray) -> np.ndarray:
    cube = torch.from_numpy(x.T[:, :, None].copy())  # (C, N, 1) as an image
    return route(cube)[:, :, 0].T.numpy()


def test_standardize_is_the_training_z_score(pixels):
    route = BandRoute.fit("standardize", pixels)
    expected = (pixels - pixels.mean(0)) / pixels.std(0)
    np.testing.assert_allclose(_apply(route, pixels), expected, atol=1e-10)
    assert route.num_bands_out == 30 and route.band_names[0] == "band_1"


def test_none_is_identity(pixels):
    route = BandRoute.fit("none", pixels)
    np.testing.assert_array_equal(_apply(route, pixels), pixels)


@pytest.mark.parametrize("whiten", [True, False])
def test_pca_matches_sklearn_on_standardised_pixels(pixels, whiten):
    route = BandRoute.fit("pca", pixels, num_components=4, whiten=whiten)
    z = (pixels - pixels.mean(0)) / pixels.std(0)
    reference = PCA(n_components=4, whiten=whiten).fit(z)
    out = _apply(route, pixels)
    expected = reference.transform(z)
    if whiten:  # sklearn scales by the n-1 variance; the route by the n variance
        expected *= np.sqrt(len(z) / (len(z) - 1))
    signs = np.sign((out * expected).sum(0))  # components are defined up to sign
    np.testing.assert_allclose(out, expected * signs, atol=1e-8)
    assert route.band_names == ["PC1", "PC2", "PC3", "PC4"]
    if whiten:
        np.testing.assert_allclose(out.var(0), 1.0, rtol=1e-10)
    else:
        assert np.all(np.diff(out.var(0)) < 0)


def test_pca_sign_is_deterministic(pixels):
    a = BandRoute.fit("pca", pixels, num_components=3)
    b = BandRoute.fit("pca", pixels[::-1].copy(), num_components=3)
    torch.testing.assert_close(a.matrix, b.matrix)
    loadings = a.matrix.numpy() * pixels.std(0)  # eigenvectors up to a positive row scale
    biggest = np.abs(loadings).argmax(axis=1)
    assert np.all(loadings[np.arange(3), biggest] > 0)


def test_state_dict_round_trip_is_weights_only_safe(pixels):
    route = BandRoute.fit("pca", pixels, num_components=3)
    buffer = io.BytesIO()
    torch.save(route.state_dict(), buffer)
    buffer.seek(0)
    restored = BandRoute.from_state_dict(torch.load(buffer, weights_only=True))
    np.testing.assert_array_equal(_apply(restored, pixels), _apply(route, pixels))
    assert restored.route == "pca" and restored.band_names == route.band_names


def test_apply_batches_and_low_precision(pixels):
    route = BandRoute.fit("standardize", pixels)
    batch = torch.from_numpy(pixels[:8].reshape(2, 2, 2, 30)).permute(0, 3, 1, 2).float()
    out = route(batch)
    assert out.shape == (2, 30, 2, 2) and out.dtype == torch.float32
    # A low-precision input is mapped in float32 and handed back in its own dtype.
    half = batch.to(torch.bfloat16)
    low = route(half)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low, route(half.float()).to(torch.bfloat16))


def test_constant_band_maps_to_zero(pixels):
    flat = pixels.copy()
    flat[:, 3] = 7.0
    out = _apply(BandRoute.fit("standardize", flat), flat)
    assert np.all(out[:, 3] == 0) and np.isfinite(out).all()


@pytest.mark.parametrize(
    ("route", "kwargs", "message"),
    [
        ("lda", {}, "unknown"),
        ("pca", {"num_components": 31}, "num_components=31"),
        ("pca", {"num_components": 0}, "num_components=0"),
        ("sentinel2", {}, "wavelengths"),
        ("sentinel2", {"wavelengths": [500.0, 600.0]}, "2 wavelengths for a cube of 30"),
    ],
)
def test_bad_fits_are_explained(pixels, route, kwargs, message):
    with pytest.raises(ValueError, match=message):
        BandRoute.fit(route, pixels, **kwargs)


def test_wrong_band_count_at_apply_time(pixels):
    route = BandRoute.fit("standardize", pixels)
    with pytest.raises(ValueError, match="fitted on 30 bands but the input has 29"):
        route(torch.zeros(29, 2, 2))


@pytest.mark.parametrize("route", ["pca", "sentinel2"])
def test_append_spectra_adds_the_training_z_score_after_the_routed_bands(pixels, route):
    options = {"wavelengths": np.linspace(450.0, 2400.0, 30)} if route == "sentinel2" else {}
    options = options or {"num_components": 4}  # the fixture has rank 5
    plain = BandRoute.fit(route, pixels, **options)
    appended = BandRoute.fit(route, pixels, append_spectra=True, **options)
    out = _apply(appended, pixels)
    assert appended.num_routed == plain.num_bands_out and appended.spectra == 30
    assert out.shape == (400, plain.num_bands_out + 30)
    np.testing.assert_allclose(out[:, : plain.num_bands_out], _apply(plain, pixels), atol=1e-9)
    expected = (pixels - pixels.mean(0)) / pixels.std(0)
    np.testing.assert_allclose(out[:, plain.num_bands_out :], expected, atol=1e-10)
    assert appended.band_names[-1] == "spectrum_30"
    assert "+ 30 spectra" in repr(appended)


def test_appended_spectra_survive_the_state_dict(pixels):
    route = BandRoute.fit("pca", pixels, num_components=4, append_spectra=True)
    buffer = io.BytesIO()
    torch.save(route.state_dict(), buffer)
    buffer.seek(0)
    restored = BandRoute.from_state_dict(torch.load(buffer, weights_only=True))
    assert (restored.num_routed, restored.spectra) == (4, 30)
    np.testing.assert_array_equal(_apply(restored, pixels), _apply(route, pixels))
    # A checkpoint written before append_spectra existed has no "spectra" entry.
    old = {k: v for k, v in route.state_dict().items() if k != "spectra"}
    old["matrix"], old["band_names"] = old["matrix"][:4], old["band_names"][:4]
    assert BandRoute.from_state_dict(old).spectra == 0


@pytest.mark.parametrize("route", ["none", "standardize"])
def test_append_spectra_to_a_route_that_keeps_every_band_is_explained(pixels, route):
    with pytest.raises(ValueError, match="already gives every band"):
        BandRoute.fit(route, pixels, append_spectra=True)
