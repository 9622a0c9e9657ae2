"""Band handling fitted on training pixels: standardisation, PCA, Sentinel-2 resampling."""

from terratorch_hsi_peft.transforms.band_route import BAND_ROUTES, BandRoute, BandRouteName
from terratorch_hsi_peft.transforms.sentinel2 import (
    SENTINEL2_BANDS,
    MissingBandPolicy,
    Sentinel2Band,
    sentinel2_weights,
)

__all__ = [
    "BAND_ROUTES",
    "SENTINEL2_BANDS",
    "BandRoute",
    "BandRouteName",
    "MissingBandPolicy",
    "Sentinel2Band",
    "sentinel2_weights",
]
