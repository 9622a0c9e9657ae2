"""Salinas (AVIRIS, Salinas Valley, California): 512 x 217 x 204, 16 classes."""

from __future__ import annotations

from terratorch_hsi_peft.datasets.benchmark import BenchmarkScene, SceneFile
from terratorch_hsi_peft.datasets.wavelengths import aviris_wavelengths

__all__ = ["Salinas"]


class Salinas(BenchmarkScene):
    """The AVIRIS Salinas scene (Salinas Valley, California, USA).

    - Sensor: AVIRIS (airborne), 224 channels of about 10 nm over about 400-2500 nm.
    - Bands: 204, the "corrected" cube: channels 108-112, 154-167 and 224 (water absorption,
      1-based) removed.
    - Wavelengths: approximate: 224 channels taken as evenly spaced over 400-2500 nm, minus the
      removed ones (see :mod:`terratorch_hsi_peft.datasets.wavelengths`).
    - Size: 512 x 217 pixels; ground sampling distance 3.7 m.
    - Classes (labels 1..16; 0 = unlabelled): Brocoli_green_weeds_1, Brocoli_green_weeds_2,
      Fallow, Fallow_rough_plow, Fallow_smooth, Stubble, Celery, Grapes_untrained,
      Soil_vinyard_develop, Corn_senesced_green_weeds, Lettuce_romaine_4wk, Lettuce_romaine_5wk,
      Lettuce_romaine_6wk, Lettuce_romaine_7wk, Vinyard_untrained, Vinyard_vertical_trellis.

    Files (EHU GIC "Hyperspectral Remote Sensing Scenes"). No digest is known for them, so
    ``checksum=True`` verifies the variable's shape and dtype family (integer vs float) against
    the values below; the dtypes are recalled from the published files, not verified here.

    | file | variable | shape, dtype |
    |---|---|---|
    | Salinas_corrected.mat | ``salinas_corrected`` | 512 x 217 x 204, int16 |
    | Salinas_gt.mat | ``salinas_gt`` | 512 x 217, uint8 |

    Cite: AVIRIS scene distributed by the EHU Grupo de Inteligencia Computacional, "Hyperspectral
    Remote Sensing Scenes" (www.ehu.eus/ccwintco/index.php/Hyperspectral_Remote_Sensing_Scenes).
    """

    NAME = "salinas"
    TITLE = "Salinas"
    IMAGE_FILE = SceneFile(
        filename="Salinas_corrected.mat",
        url="https://www.ehu.eus/ccwintco/uploads/a/a3/Salinas_corrected.mat",
        variable="salinas_corrected",
        shape=(512, 217, 204),
        dtype="int16",
    )
    LABEL_FILE = SceneFile(
        filename="Salinas_gt.mat",
        url="https://www.ehu.eus/ccwintco/uploads/f/fa/Salinas_gt.mat",
        variable="salinas_gt",
        shape=(512, 217),
        dtype="uint8",
    )
    CLASS_NAMES = (
        "Brocoli_green_weeds_1",
        "Brocoli_green_weeds_2",
        "Fallow",
        "Fallow_rough_plow",
        "Fallow_smooth",
        "Stubble",
        "Celery",
        "Grapes_untrained",
        "Soil_vinyard_develop",
        "Corn_senesced_green_weeds",
        "Lettuce_romaine_4wk",
        "Lettuce_romaine_5wk",
        "Lettuce_romaine_6wk",
        "Lettuce_romaine_7wk",
        "Vinyard_untrained",
        "Vinyard_vertical_trellis",
    )
    WAVELENGTHS = aviris_wavelengths(dropped=[(108, 112), (154, 167), (224, 224)])
    GSD = 3.7
