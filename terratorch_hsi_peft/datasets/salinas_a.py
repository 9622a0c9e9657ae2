"""Salinas-A (AVIRIS, a subscene of Salinas): 86 x 83 x 204, 6 classes."""

from __future__ import annotations

from terratorch_hsi_peft.datasets.benchmark import BenchmarkScene, SceneFile
from terratorch_hsi_peft.datasets.wavelengths import aviris_wavelengths

__all__ = ["SalinasA"]


class SalinasA(BenchmarkScene):
    """Salinas-A, an 86 x 83 subscene of the AVIRIS Salinas scene (Salinas Valley, California).

    - Sensor: AVIRIS (airborne), 224 channels of about 10 nm over about 400-2500 nm.
    - Bands: 204, the "corrected" cube: channels 108-112, 154-167 and 224 (water absorption,
      1-based) removed, as in Salinas.
    - Wavelengths: approximate, as for :class:`~terratorch_hsi_peft.datasets.salinas.Salinas`.
    - Size: 86 x 83 pixels; ground sampling distance 3.7 m.
    - Classes (labels 1..6; 0 = unlabelled): Brocoli_green_weeds_1, Corn_senesced_green_weeds,
      Lettuce_romaine_4wk, Lettuce_romaine_5wk, Lettuce_romaine_6wk, Lettuce_romaine_7wk.
    - Raw label codes: the label file numbers these classes 1, 10, 11, 12, 13, 14 (their Salinas
      codes); they are mapped to 1..6 in that order.

    Files (EHU GIC "Hyperspectral Remote Sensing Scenes"). No digest is known for them, so
    ``checksum=True`` verifies the variable's shape and dtype family (integer vs float) against
    the values below; the dtypes are recalled from the published files, not verified here.

    | file | variable | shape, dtype |
    |---|---|---|
    | SalinasA_corrected.mat | ``salinasA_corrected`` | 86 x 83 x 204, int16 |
    | SalinasA_gt.mat | ``salinasA_gt`` | 86 x 83, uint8 |

    Cite: AVIRIS scene distributed by the EHU Grupo de Inteligencia Computacional, "Hyperspectral
    Remote Sensing Scenes" (www.ehu.eus/ccwintco/index.php/Hyperspectral_Remote_Sensing_Scenes).
    """

    NAME = "salinas_a"
    TITLE = "Salinas-A"
    IMAGE_FILE = SceneFile(
        filename="SalinasA_corrected.mat",
        url="https://www.ehu.eus/ccwintco/uploads/1/1a/SalinasA_corrected.mat",
        variable="salinasA_corrected",
        shape=(86, 83, 204),
        dtype="int16",
    )
    LABEL_FILE = SceneFile(
        filename="SalinasA_gt.mat",
        url="https://www.ehu.eus/ccwintco/uploads/a/aa/SalinasA_gt.mat",
        variable="salinasA_gt",
        shape=(86, 83),
        dtype="uint8",
    )
    CLASS_NAMES = (
        "Brocoli_green_weeds_1",
        "Corn_senesced_green_weeds",
        "Lettuce_romaine_4wk",
        "Lettuce_romaine_5wk",
        "Lettuce_romaine_6wk",
        "Lettuce_romaine_7wk",
    )
    RAW_LABEL_VALUES = (1, 10, 11, 12, 13, 14)
    WAVELENGTHS = aviris_wavelengths(dropped=[(108, 112), (154, 167), (224, 224)])
    GSD = 3.7
