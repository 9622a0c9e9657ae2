"""Hyperspectral benchmark scenes, a generic scene loader, and leak-free train/val/test splits."""

from terratorch_hsi_peft.datasets.base import HyperspectralScene
from terratorch_hsi_peft.datasets.benchmark import BenchmarkScene, SceneFile
from terratorch_hsi_peft.datasets.botswana import Botswana
from terratorch_hsi_peft.datasets.catalog import SCENES, load_scene
from terratorch_hsi_peft.datasets.generic import GenericScene
from terratorch_hsi_peft.datasets.indian_pines import IndianPines
from terratorch_hsi_peft.datasets.ksc import KennedySpaceCenter
from terratorch_hsi_peft.datasets.pavia_centre import PaviaCentre
from terratorch_hsi_peft.datasets.pavia_university import PaviaUniversity
from terratorch_hsi_peft.datasets.product import ProductScene
from terratorch_hsi_peft.datasets.salinas import Salinas
from terratorch_hsi_peft.datasets.salinas_a import SalinasA
from terratorch_hsi_peft.datasets.splits import (
    PROTOCOLS,
    Split,
    make_split,
    per_class_split,
    spatially_disjoint_split,
)

__all__ = [
    "PROTOCOLS",
    "SCENES",
    "BenchmarkScene",
    "Botswana",
    "GenericScene",
    "HyperspectralScene",
    "IndianPines",
    "KennedySpaceCenter",
    "PaviaCentre",
    "PaviaUniversity",
    "ProductScene",
    "Salinas",
    "SalinasA",
    "SceneFile",
    "Split",
    "load_scene",
    "make_split",
    "per_class_split",
    "spatially_disjoint_split",
]
