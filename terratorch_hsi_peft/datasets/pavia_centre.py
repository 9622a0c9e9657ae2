"""Pavia Centre (ROSIS, Pavia, Italy): 1096 x 715 x 102, 9 classes."""

from __future__ import annotations

from terratorch_hsi_peft.datasets.benchmark import BenchmarkScene, SceneFile
from terratorch_hsi_peft.datasets.wavelengths import rosis_wavelengths

__all__ = ["PaviaCentre"]


class PaviaCentre(BenchmarkScene):
    """The ROSIS Pavia Centre scene (Pavia, northern Italy, 2001 flight campaign).

    - Sensor: ROSIS-03 (airborne), 115 channels over 430-860 nm.
    - Bands: 102, after removing 13 noisy channels (as distributed; the non-informative strip of the
      original 1096-column image already cut out).
    - Wavelengths: approximate: 102 centres evenly spaced over 430-860 nm (the file carries none).
    - Size: 1096 x 715 pixels; ground sampling distance 1.3 m.
    - Classes (labels 1..9; 0 = unlabelled): Water, Trees, Asphalt, Self-Blocking Bricks,
      Bitumen, Tiles, Shadows, Meadows, Bare Soil.

    Files (EHU GIC "Hyperspectral Remote Sensing Scenes"). No digest is known for them, so
    ``checksum=True`` verifies the variable's shape and dtype family (integer vs float) against
    the values below; the dtypes are recalled from the published files, not verified here.

    | file | variable | shape, dtype |
    |---|---|---|
    | Pavia.mat | ``pavia`` | 1096 x 715 x 102, uint16 |
    | Pavia_gt.mat | ``pavia_gt`` | 1096 x 715, uint8 |

    Cite: P. Gamba, "A collection of data for urban area characterization", IEEE IGARSS 2004;
    data: EHU Grupo de Inteligencia Computacional, "Hyperspectral Remote Sensing Scenes".
    """

    NAME = "pavia_centre"
    TITLE = "Pavia Centre"
    IMAGE_FILE = SceneFile(
        filename="Pavia.mat",
        url="https://www.ehu.eus/ccwintco/uploads/e/e3/Pavia.mat",
        variable="pavia",
        shape=(1096, 715, 102),
        dtype="uint16",
    )
    LABEL_FILE = SceneFile(
        filename="Pavia_gt.mat",
        url="https://www.ehu.eus/ccwintco/uploads/5/53/Pavia_gt.mat",
        variable="pavia_gt",
        shape=(1096, 715),
        dtype="uint8",
    )
    CLASS_NAMES = (
        "Water",
        "Trees",
        "Asphalt",
        "Self-Blocking Bricks",
        "Bitumen",
        "Tiles",
        "Shadows",
        "Meadows",
        "Bare Soil",
    )
    WAVELENGTHS = rosis_wavelengths(102)
    GSD = 1.3
