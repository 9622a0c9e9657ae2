"""Indian Pines (AVIRIS, Indiana, USA), water-absorption-corrected: 145 x 145 x 200, 16 classes."""

from __future__ import annotations

from terratorch_hsi_peft.datasets.benchmark import BenchmarkScene, SceneFile
from terratorch_hsi_peft.datasets.wavelengths import aviris_wavelengths

__all__ = ["IndianPines"]


class IndianPines(BenchmarkScene):
    """The AVIRIS Indian Pines scene (Indian Pine Test Site 3, Indiana, USA, 12 June 1992).

    - Sensor: AVIRIS (airborne), 224 channels of about 10 nm over about 400-2500 nm.
    - Bands: 200, the "corrected" cube: of the 220 channels of the Purdue release, channels
      104-108, 150-163 and 220 (water absorption, 1-based) removed.
    - Wavelengths: approximate band centres (nm): the 220 channels taken as evenly spaced over
      400-2500 nm, minus the removed channels (see
      :mod:`terratorch_hsi_peft.datasets.wavelengths`).
    - Size: 145 x 145 pixels; ground sampling distance 20 m.
    - Classes (labels 1..16; 0 = unlabelled), labelled pixels: Alfalfa 46, Corn-notill 1428,
      Corn-mintill 830, Corn 237, Grass-pasture 483, Grass-trees 730, Grass-pasture-mowed 28,
      Hay-windrowed 478, Oats 20, Soybean-notill 972, Soybean-mintill 2455, Soybean-clean 593,
      Wheat 205, Woods 1265, Buildings-Grass-Trees-Drives 386, Stone-Steel-Towers 93
      (10,249 in all).

    Files (EHU GIC "Hyperspectral Remote Sensing Scenes"), verified by sha256 and size:

    | file | variable | shape, dtype |
    |---|---|---|
    | Indian_pines_corrected.mat | ``indian_pines_corrected`` | 145 x 145 x 200, uint16 |
    | Indian_pines_gt.mat | ``indian_pines_gt`` | 145 x 145, uint8 |

    Cite: M. F. Baumgardner, L. L. Biehl, D. A. Landgrebe, "220 Band AVIRIS Hyperspectral Image
    Data Set: June 12, 1992 Indian Pine Test Site 3", Purdue University Research Repository, 2015.
    doi:10.4231/R7RX991C.
    """

    NAME = "indian_pines"
    TITLE = "Indian Pines"
    IMAGE_FILE = SceneFile(
        filename="Indian_pines_corrected.mat",
        url="https://www.ehu.eus/ccwintco/uploads/6/67/Indian_pines_corrected.mat",
        variable="indian_pines_corrected",
        shape=(145, 145, 200),
        dtype="uint16",
        sha256="ec2f8808710919d566f70f0d4aa885aae1ddfd42b734aba71c5e12ca65450939",
        size=5953527,
    )
    LABEL_FILE = SceneFile(
        filename="Indian_pines_gt.mat",
        url="https://www.ehu.eus/ccwintco/uploads/c/c4/Indian_pines_gt.mat",
        variable="indian_pines_gt",
        shape=(145, 145),
        dtype="uint8",
        sha256="65c4687a8ab04f6da4789799bc3bc4f6e88bccac3ed6a2e6ae367e5e6b9e429c",
        size=1125,
    )
    CLASS_NAMES = (
        "Alfalfa",
        "Corn-notill",
        "Corn-mintill",
        "Corn",
        "Grass-pasture",
        "Grass-trees",
        "Grass-pasture-mowed",
        "Hay-windrowed",
        "Oats",
        "Soybean-notill",
        "Soybean-mintill",
        "Soybean-clean",
        "Wheat",
        "Woods",
        "Buildings-Grass-Trees-Drives",
        "Stone-Steel-Towers",
    )
    WAVELENGTHS = aviris_wavelengths(dropped=[(104, 108), (150, 163), (220, 220)], channels=220)
    GSD = 20.0
