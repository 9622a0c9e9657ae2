"""Write tiny fake files with the real layout of each benchmark scene (torchgeo style).

Each fake keeps what the loaders rely on (file names, .mat variable names, band count, dtypes,
MATLAB v5 format, the raw label codes) and shrinks the spatial size, so tests run in
milliseconds. Labels cycle through 0 and every class code, so each class is present.

Usage: ``python tests/data/make_fake_scenes.py OUT_DIR`` writes ``OUT_DIR/<scene name>/...``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import scipy.io

from terratorch_hsi_peft.datasets import SCENES, BenchmarkScene

FAKE_SHAPE = (12, 10)


def fake_arrays(scene: type[BenchmarkScene], shape: tuple[int, int] = FAKE_SHAPE, seed: int = 0):
    """Return (cube, raw labels) with the scene's band count, dtypes and raw label codes."""
    rng = np.random.default_rng(seed)
    bands = scene.IMAGE_FILE.shape[2]
    cube = rng.integers(0, 4000, size=(*shape, bands)).astype(scene.IMAGE_FILE.dtype)
    codes = scene.RAW_LABEL_VALUES or tuple(range(1, len(scene.CLASS_NAMES) + 1))
    cycle = np.array((0, *codes))
    labels = cycle[np.arange(shape[0] * shape[1]) % cycle.size].reshape(shape)
    return cube, labels.astype(scene.LABEL_FILE.dtype)


def write_fake_scene(
    scene: type[BenchmarkScene], folder: Path, shape: tuple[int, int] = FAKE_SHAPE, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Write the scene's two .mat files (MATLAB v5) into ``folder``; return (cube, raw labels)."""
    folder.mkdir(parents=True, exist_ok=True)
    cube, labels = fake_arrays(scene, shape, seed)
    for spec, array in ((scene.IMAGE_FILE, cube), (scene.LABEL_FILE, labels)):
        scipy.io.savemat(folder / spec.filename, {spec.variable: array})
    return cube, labels


def main(out_dir: str) -> None:
    for name, scene in SCENES.items():
        write_fake_scene(scene, Path(out_dir) / name)


if __name__ == "__main__":
    main(sys.argv[1])
