"""Any hyperspectral cube from a file, with or without a label raster."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from terratorch_hsi_peft.datasets.base import HyperspectralScene
from terratorch_hsi_peft.datasets.io import read_array

__all__ = ["GenericScene"]


class GenericScene(HyperspectralScene):
    """A scene read from your own files: a cube, and optionally a label raster.

    Supported files: MATLAB ``.mat`` (v5 via scipy, v7.3/HDF5 via h5py, transposed back to
    MATLAB's axis order), ``.npy`` and GeoTIFF (bands-first on disk, returned (H, W, C)). A ``.mat``
    file that stores pixels as columns (a ``bands x N`` matrix plus ``nRow``/``nCol`` scalars, in
    MATLAB column-major pixel order, as in the Jasper Ridge and Samson releases) is unfolded into
    an (H, W, C) cube. Without labels the scene is valid for prediction only.

    Args:
        image_path: the cube file, (H, W, C).
        label_path: the label raster, (H, W), 0 = unlabelled, 1..K = classes; ``None`` for a
            prediction-only scene.
        image_key: the cube's variable in a ``.mat`` file; by default the only 3-D array (or the
            only pixels-as-columns matrix).
        label_key: the labels' variable in a ``.mat`` file; by default the only 2-D array.
        wavelengths: (C,) band centres in nm, if known.
        class_names: names of classes 1..K; by default ``class_1`` ... ``class_K``, K being the
            largest label. Labels above K are an error.
        name: scene identifier; by default the cube file's stem.
        gsd: ground sampling distance in metres, if known.

    Raises:
        FileNotFoundError: a file does not exist.
        ValueError: a file is truncated, corrupt, ambiguous or holds invalid values (see
            :class:`~terratorch_hsi_peft.datasets.base.HyperspectralScene`).
    """

    def __init__(
        self,
        image_path: str | os.PathLike,
        label_path: str | os.PathLike | None = None,
        image_key: str | None = None,
        label_key: str | None = None,
        wavelengths: Sequence[float] | np.ndarray | None = None,
        class_names: Sequence[str] | None = None,
        name: str | None = None,
        gsd: float | None = None,
    ) -> None:
        self.image_path = Path(image_path)
        self.label_path = None if label_path is None else Path(label_path)
        image = read_array(self.image_path, image_key, ndim=3)
        labels = None if self.label_path is None else read_array(self.label_path, label_key, ndim=2)
        super().__init__(
            image,
            labels,
            class_names=class_names,
            wavelengths=wavelengths,
            gsd=gsd,
            name=name or self.image_path.stem,
            image_source=str(self.image_path),
            label_source=None if self.label_path is None else str(self.label_path),
        )
