"""Kennedy Space Center (AVIRIS, Florida): 512 x 614 x 176, 13 classes."""

from __future__ import annotations

from terratorch_hsi_peft.datasets.benchmark import BenchmarkScene, SceneFile
from terratorch_hsi_peft.datasets.wavelengths import aviris_wavelengths

__all__ = ["KennedySpaceCenter"]


class KennedySpaceCenter(BenchmarkScene):
    """The AVIRIS Kennedy Space Center scene (Merritt Island, Florida, USA, 23 March 1996).

    - Sensor: AVIRIS (airborne), 224 channels of about 10 nm over about 400-2500 nm.
    - Bands: 176, after removing water-absorption and low-SNR channels. Which channels were removed
      is not published with the file.
    - Wavelengths: approximate: 224 channels taken as evenly spaced over 400-2500 nm, minus an
      ASSUMED set of 48 removed channels (1-4, 102-116, 151-172, 218-224: the usual
      water-absorption and low-SNR ranges); expect errors of tens of nm near those ranges.
    - Size: 512 x 614 pixels; ground sampling distance 18 m.
    - Classes (labels 1..13; 0 = unlabelled): Scrub, Willow swamp, Cabbage palm hammock, Cabbage
      palm/oak hammock, Slash pine, Oak/broadleaf hammock, Hardwood swamp, Graminoid marsh,
      Spartina marsh, Cattail marsh, Salt marsh, Mud flats, Water.

    Files (EHU GIC "Hyperspectral Remote Sensing Scenes"). No digest is known for them, so
    ``checksum=True`` verifies the variable's shape and dtype family (integer vs float) against
    the values below; the dtypes are recalled from the published files, not verified here.

    | file | variable | shape, dtype |
    |---|---|---|
    | KSC.mat | ``KSC`` | 512 x 614 x 176, uint16 |
    | KSC_gt.mat | ``KSC_gt`` | 512 x 614, uint8 |

    Cite: J. Ham, Y. Chen, M. M. Crawford, J. Ghosh, "Investigation of the random forest framework
    for classification of hyperspectral data", IEEE TGRS 43(3), 2005.
    """

    NAME = "ksc"
    TITLE = "Kennedy Space Center"
    IMAGE_FILE = SceneFile(
        filename="KSC.mat",
        url="https://www.ehu.eus/ccwintco/uploads/2/26/KSC.mat",
        variable="KSC",
        shape=(512, 614, 176),
        dtype="uint16",
    )
    LABEL_FILE = SceneFile(
        filename="KSC_gt.mat",
        url="https://www.ehu.eus/ccwintco/uploads/a/a6/KSC_gt.mat",
        variable="KSC_gt",
        shape=(512, 614),
        dtype="uint8",
    )
    CLASS_NAMES = (
        "Scrub",
        "Willow swamp",
        "Cabbage palm hammock",
        "Cabbage palm/oak hammock",
        "Slash pine",
        "Oak/broadleaf hammock",
        "Hardwood swamp",
        "Graminoid marsh",
        "Spartina marsh",
        "Cattail marsh",
        "Salt marsh",
        "Mud flats",
        "Water",
    )
    WAVELENGTHS = aviris_wavelengths(dropped=[(1, 4), (102, 116), (151, 172), (218, 224)])
    GSD = 18.0
