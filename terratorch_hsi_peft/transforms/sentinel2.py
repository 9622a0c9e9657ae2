"""Simulate SpectralGPT's 12 Sentinel-2 bands from a hyperspectral sensor's channels.

Each Sentinel-2 band is modelled as a Gaussian spectral response with the band's published centre
and width (FWHM) - the usual approximation when the measured response curves are not at hand.
Sensor channel ``i`` (centre ``wl[i]``) stands for the interval ``wl[i] +- h[i] / 2`` with
``h[i]`` the distance to its nearest neighbouring channel, so gaps in the sensor's coverage (the
water-absorption channels removed from AVIRIS scenes, the missing SWIR of ROSIS) stay gaps. A band's
weights are the Gaussian's mass over each channel's interval, normalised to sum to one; their sum
before normalisation is the band's *coverage*, the fraction of its response the sensor sees.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.special import ndtr

__all__ = [
    "SENTINEL2_BANDS",
    "MissingBandPolicy",
    "Sentinel2Band",
    "sentinel2_weights",
]

MissingBandPolicy = Literal["zero", "nearest", "error"]


@dataclass(frozen=True)
class Sentinel2Band:
    """One Sentinel-2A MSI band: name, centre wavelength and full width at half maximum, in nm."""

    name: str
    center: float
    fwhm: float


#: The 12 bands SpectralGPT was pretrained on, in its input order (B10 is not used).
SENTINEL2_BANDS: tuple[Sentinel2Band, ...] = (
    Sentinel2Band("B1", 443.0, 21.0),
    Sentinel2Band("B2", 492.0, 66.0),
    Sentinel2Band("B3", 560.0, 36.0),
    Sentinel2Band("B4", 665.0, 31.0),
    Sentinel2Band("B5", 704.0, 15.0),
    Sentinel2Band("B6", 740.0, 15.0),
    Sentinel2Band("B7", 783.0, 20.0),
    Sentinel2Band("B8", 833.0, 106.0),
    Sentinel2Band("B8A", 865.0, 21.0),
    Sentinel2Band("B9", 945.0, 20.0),
    Sentinel2Band("B11", 1614.0, 91.0),
    Sentinel2Band("B12", 2202.0, 175.0),
)

_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def _channel_intervals(wavelengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper wavelength of the interval each channel stands for (any channel order)."""
    order = np.argsort(wavelengths)
    wl = wavelengths[order]
    gaps = np.diff(wl)
    if len(wl) == 1:
        raise ValueError(
            "Sentinel-2 resampling needs at least two sensor channels to know their spacing; "
            "got one. Use band_route 'standardize' or 'none' for a single-band image."
        )
    left = np.concatenate([gaps[:1], gaps])
    right = np.concatenate([gaps, gaps[-1:]])
    width = np.minimum(left, right)
    lower, upper = np.empty_like(wl), np.empty_like(wl)
    lower[order], upper[order] = wl - width / 2, wl + width / 2
    return lower, upper


def sentinel2_weights(
    wavelengths: Sequence[float] | np.ndarray,
    missing_bands: MissingBandPolicy = "zero",
    min_coverage: float = 0.25,
) -> tuple[np.ndarray, list[str]]:
    """Weights that turn a sensor's channels into SpectralGPT's 12 Sentinel-2 bands.

    Args:
        wavelengths: (C,) centre wavelength of every sensor channel, in nm, in band order.
        missing_bands: what to do with a Sentinel-2 band whose coverage is below
            ``min_coverage`` (e.g. B9, B11 and B12 for ROSIS, 430-860 nm): ``"zero"`` gives it an
            all-zero row (after standardisation the band reads as the training mean; a warning
            lists the bands), ``"nearest"`` copies the sensor channel closest to the band centre
            (also with a warning), ``"error"`` raises.
        min_coverage: fraction of a band's Gaussian response that must fall on sensor channels
            for the band to be simulated.

    Returns:
        ``(weights, missing)``: a float64 (12, C) matrix whose rows sum to one (all-zero rows for
        missing bands under ``"zero"``), and the names of the bands treated as missing.

    Raises:
        ValueError: wavelengths that are not finite, positive, distinct nm values (values below
            100 are taken for micrometres), an unknown policy, or missing bands under ``"error"``.
    """
    wl = np.asarray(wavelengths, dtype=np.float64).reshape(-1)
    if missing_bands not in ("zero", "nearest", "error"):
        raise ValueError(
            f"missing_bands={missing_bands!r} is not a policy; use 'zero', 'nearest' or 'error'."
        )
    if not 0.0 < min_coverage <= 1.0:
        raise ValueError(f"min_coverage={min_coverage} must lie in (0, 1]; the default is 0.25.")
    if not np.isfinite(wl).all() or (wl <= 0).any():
        raise ValueError("Sensor wavelengths must be finite and positive, in nm.")
    if wl.max() < 100:
        raise ValueError(
            f"Sensor wavelengths look like micrometres (largest {wl.max():g}); give them in nm "
            "(multiply by 1000)."
        )
    if len(np.unique(wl)) != len(wl):
        raise ValueError("Sensor wavelengths must be distinct: two channels share a centre.")

    lower, upper = _channel_intervals(wl)
    weights = np.zeros((len(SENTINEL2_BANDS), len(wl)))
    missing: list[str] = []
    for row, band in enumerate(SENTINEL2_BANDS):
        sigma = band.fwhm * _FWHM_TO_SIGMA
        mass = ndtr((upper - band.center) / sigma) - ndtr((lower - band.center) / sigma)
        coverage = mass.sum()
        if coverage >= min_coverage:
            weights[row] = mass / coverage
            continue
        missing.append(band.name)
        if missing_bands == "nearest":
            weights[row, np.argmin(np.abs(wl - band.center))] = 1.0

    if missing:
        span = f"{wl.min():g}-{wl.max():g} nm"
        if missing_bands == "error":
            raise ValueError(
                f"The sensor ({span}) covers less than {min_coverage:.0%} of Sentinel-2 band(s) "
                f"{', '.join(missing)}. Set missing_bands to 'zero' (feed the training mean) or "
                "'nearest' (copy the closest channel), lower min_coverage, or use band_route 'pca'."
            )
        action = (
            "set to zero (the training mean after standardisation)"
            if missing_bands == "zero"
            else "copied from the nearest sensor channel"
        )
        warnings.warn(
            f"Sentinel-2 band(s) {', '.join(missing)} lie outside the sensor's coverage ({span}); "
            f"they are {action}.",
            UserWarning,
            stacklevel=2,
        )
    return weights, missing
