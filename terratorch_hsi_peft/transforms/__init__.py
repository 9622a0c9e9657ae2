"""Band routes fitted on training pixels (z-score, PCA, Sentinel-2) and training augmentation."""

from terratorch_hsi_peft.transforms.augment import (
    BatchTransform,
    RandomFlipRotate,
    SampleTransformDataset,
    SpectralJitter,
    split_train_transform,
)
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
    "BatchTransform",
    "MissingBandPolicy",
    "RandomFlipRotate",
    "SampleTransformDataset",
    "Sentinel2Band",
    "SpectralJitter",
    "sentinel2_weights",
    "split_train_transform",
]
