"""Hyperspectral benchmark scenes, a generic scene loader, and leak-free train/val/test splits."""

from terratorch_hsi_peft.datasets.base import HyperspectralScene
from terratorch_hsi_peft.datasets.indian_pines import IndianPines
from terratorch_hsi_peft.datasets.splits import (
    PROTOCOLS,
    Split,
    make_split,
    per_class_split,
    spatially_disjoint_split,
)

__all__ = [
    "PROTOCOLS",
    "HyperspectralScene",
    "IndianPines",
    "Split",
    "make_split",
    "per_class_split",
    "spatially_disjoint_split",
]
