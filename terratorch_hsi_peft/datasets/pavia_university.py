"""Pavia University (ROSIS, Pavia, Italy): 610 x 340 x 103, 9 classes."""

from __future__ import annotations

from terratorch_hsi_peft.datasets.benchmark import BenchmarkScene, SceneFile
from terratorch_hsi_peft.datasets.wavelengths import rosis_wavelengths

__all__ = ["PaviaUniversity"]


class PaviaUniversity(BenchmarkScene):
    """The ROSIS Pavia University scene (Pavia, northern Italy, 2001 flight campaign).

    - Sensor: ROSIS-03 (airborne), 115 channels over 430-860 nm.
    - Bands: 103, after removing 12 noisy channels (as distributed).
    - Wavelengths: approximate: 103 centres evenly spaced over 430-860 nm (the file carries none).
    - Size: 610 x 340 pixels; ground sampling distance 1.3 m.
    - Classes (labels 1..9; 0 = unlabelled): Asphalt, Meadows, Gravel, Trees, Painted metal
      sheets, Bare Soil, Bitumen, Self-Blocking Bricks, Shadows.

    Files (EHU GIC "Hyperspectral Remote Sensing Scenes"). No digest is known for them, so
    ``checksum=True`` verifies the variable's shape and dtype family (integer vs float) against
    the values below; the dtypes are recalled from the published files, not verified here.

    | file | variable | shape, dtype |
    |---|---|---|
    | PaviaU.mat | ``paviaU`` | 610 x 340 x 103, uint16 |
    | PaviaU_gt.mat | ``paviaU_gt`` | 610 x 340, uint8 |

    Cite: P. Gamba, "A collection of data for urban area characterization", IEEE IGARSS 2004;
    data: EHU Grupo de Inteligencia Computacional, "Hyperspectral Remote Sensing Scenes".
    """

    NAME = "pavia_university"
    TITLE = "Pavia University"
    IMAGE_FILE = SceneFile(
        filename="PaviaU.mat",
        url="https://www.ehu.eus/ccwintco/uploads/e/ee/PaviaU.mat",
        variable="paviaU",
        shape=(610, 340, 103),
        dtype="uint16",
    )
    LABEL_FILE = SceneFile(
        filename="PaviaU_gt.mat",
        url="https://www.ehu.eus/ccwintco/uploads/5/50/PaviaU_gt.mat",
        variable="paviaU_gt",
        shape=(610, 340),
        dtype="uint8",
    )
    CLASS_NAMES = (
        "Asphalt",
        "Meadows",
        "Gravel",
        "Trees",
        "Painted metal sheets",
        "Bare Soil",
        "Bitumen",
        "Self-Blocking Bricks",
        "Shadows",
    )
    WAVELENGTHS = rosis_wavelengths(103)
    GSD = 1.3
