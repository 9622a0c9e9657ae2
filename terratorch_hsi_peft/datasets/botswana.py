"""Botswana (Hyperion, Okavango Delta): 1476 x 256 x 145, 14 classes."""

from __future__ import annotations

from terratorch_hsi_peft.datasets.benchmark import BenchmarkScene, SceneFile
from terratorch_hsi_peft.datasets.wavelengths import hyperion_wavelengths

__all__ = ["Botswana"]


class Botswana(BenchmarkScene):
    """The Hyperion Botswana scene (Okavango Delta, Botswana, 31 May 2001).

    - Sensor: Hyperion on NASA EO-1 (spaceborne), 242 channels of about 10 nm over 357-2576 nm.
    - Bands: 145: channels 10-55, 82-97, 102-119, 134-164 and 187-220 (1-based) kept after removing
      uncalibrated, noisy and water-absorption channels.
    - Wavelengths: approximate: Hyperion VNIR channels 1-70 evenly spaced over 355.59-1058.01
      nm and SWIR channels 71-242 over 851.92-2577.08 nm, at the kept channels.
    - Size: 1476 x 256 pixels; ground sampling distance 30 m.
    - Classes (labels 1..14; 0 = unlabelled): Water, Hippo grass, Floodplain grasses 1,
      Floodplain grasses 2, Reeds, Riparian, Firescar, Island interior, Acacia woodlands, Acacia
      shrublands, Acacia grasslands, Short mopane, Mixed mopane, Exposed soils.

    Files (EHU GIC "Hyperspectral Remote Sensing Scenes"). No digest is known for them, so
    ``checksum=True`` verifies the variable's shape and dtype family (integer vs float) against
    the values below; the dtypes are recalled from the published files, not verified here.

    | file | variable | shape, dtype |
    |---|---|---|
    | Botswana.mat | ``Botswana`` | 1476 x 256 x 145, uint16 |
    | Botswana_gt.mat | ``Botswana_gt`` | 1476 x 256, uint8 |

    Cite: J. Ham, Y. Chen, M. M. Crawford, J. Ghosh, "Investigation of the random forest framework
    for classification of hyperspectral data", IEEE TGRS 43(3), 2005.
    """

    NAME = "botswana"
    TITLE = "Botswana"
    IMAGE_FILE = SceneFile(
        filename="Botswana.mat",
        url="https://www.ehu.eus/ccwintco/uploads/7/72/Botswana.mat",
        variable="Botswana",
        shape=(1476, 256, 145),
        dtype="uint16",
    )
    LABEL_FILE = SceneFile(
        filename="Botswana_gt.mat",
        url="https://www.ehu.eus/ccwintco/uploads/5/58/Botswana_gt.mat",
        variable="Botswana_gt",
        shape=(1476, 256),
        dtype="uint8",
    )
    CLASS_NAMES = (
        "Water",
        "Hippo grass",
        "Floodplain grasses 1",
        "Floodplain grasses 2",
        "Reeds",
        "Riparian",
        "Firescar",
        "Island interior",
        "Acacia woodlands",
        "Acacia shrublands",
        "Acacia grasslands",
        "Short mopane",
        "Mixed mopane",
        "Exposed soils",
    )
    WAVELENGTHS = hyperion_wavelengths(
        kept=[(10, 55), (82, 97), (102, 119), (134, 164), (187, 220)]
    )
    GSD = 30.0
