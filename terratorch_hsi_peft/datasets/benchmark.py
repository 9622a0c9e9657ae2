"""Named benchmark scenes stored as a cube file and a label file: lookup, download, verification.

A subclass (one per scene, torchgeo style) only declares its files and facts; this base class
finds the files under ``root``, fetches missing ones when ``download=True`` and verifies each file:

- by sha256 (and size) where the published file's digest is known;
- otherwise by the shape and dtype family of the variable in the file, stated as such.

Checks that always apply (whatever ``checksum`` says): the variable exists, the cube has the
scene's band count, and cube and labels have the same size. ``checksum=True`` adds the digest, or
the full published shape and dtype family, so a cropped or modified copy must be loaded with
``checksum=False`` (or through :class:`~terratorch_hsi_peft.datasets.generic.GenericScene`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from terratorch_hsi_peft.datasets.base import HyperspectralScene
from terratorch_hsi_peft.datasets.io import read_array
from terratorch_hsi_peft.utils.download import DownloadError, download_url, sha256sum

__all__ = ["BenchmarkScene", "SceneFile"]


@dataclass(frozen=True)
class SceneFile:
    """One published file of a scene and what is known about it.

    Attributes:
        filename: name of the file under the scene's ``root``.
        url: public address it is downloaded from.
        variable: name of the array inside the ``.mat`` file.
        shape: shape of that array in the published file.
        dtype: dtype of that array in the published file; the check compares the dtype family
            (integer or floating point), not the exact width.
        sha256: hex digest of the published file, where known.
        size: size in bytes of the published file, where known.
    """

    filename: str
    url: str
    variable: str
    shape: tuple[int, ...]
    dtype: str
    sha256: str | None = None
    size: int | None = None


class BenchmarkScene(HyperspectralScene):
    """A published scene read from ``root``: a cube file and a label file.

    Args:
        root: folder holding the scene's files (downloaded there with ``download=True``).
        download: fetch files missing from ``root`` (atomically; checked before they are kept).
        checksum: verify each file against the published one (sha256 where known, else the
            variable's full shape and dtype family). Pass ``False`` for a cropped or modified copy
            with the same variable names and band count.

    Raises:
        FileNotFoundError: a file is missing and ``download`` is False.
        ValueError: a file is truncated, corrupt or not the published one (see ``checksum``).
        DownloadError: a download failed or its result did not pass the checks; nothing is kept.
    """

    NAME: ClassVar[str]
    TITLE: ClassVar[str]
    IMAGE_FILE: ClassVar[SceneFile]
    LABEL_FILE: ClassVar[SceneFile]
    CLASS_NAMES: ClassVar[tuple[str, ...]]
    WAVELENGTHS: ClassVar[np.ndarray]
    GSD: ClassVar[float]
    #: Raw codes of classes 1..K in the label file, when the file does not number them 1..K.
    RAW_LABEL_VALUES: ClassVar[tuple[int, ...] | None] = None

    def __init__(self, root: str | os.PathLike, download: bool = False, checksum: bool = True):
        self.root = Path(root)
        image_path = self.root / self.IMAGE_FILE.filename
        label_path = self.root / self.LABEL_FILE.filename
        image = self._read(self.IMAGE_FILE, image_path, 3, download, checksum)
        labels = self._read(self.LABEL_FILE, label_path, 2, download, checksum)
        super().__init__(
            image,
            self._numbered_labels(labels, label_path),
            class_names=self.CLASS_NAMES,
            wavelengths=self.WAVELENGTHS,
            gsd=self.GSD,
            name=self.NAME,
            image_source=str(image_path),
            label_source=str(label_path),
        )

    @classmethod
    def files(cls) -> tuple[SceneFile, SceneFile]:
        """The scene's cube file and label file."""
        return cls.IMAGE_FILE, cls.LABEL_FILE

    def _read(
        self, spec: SceneFile, path: Path, ndim: int, download: bool, checksum: bool
    ) -> np.ndarray:
        if download and not path.is_file():
            return self._fetch(spec, path, ndim, checksum)
        hint = (
            f"Pass download=True to fetch it from {spec.url}, or place the published "
            f"{spec.filename} there by hand."
        )
        array = read_array(path, spec.variable, ndim, missing_hint=hint)
        self._verify(spec, path, array, checksum)
        return array

    def _fetch(self, spec: SceneFile, path: Path, ndim: int, checksum: bool) -> np.ndarray:
        # Download beside the destination and move it into place only once every check passed,
        # so an interrupted or wrong download never leaves a file that looks like the scene's.
        partial = path.with_name(f".{path.stem}.download{path.suffix}")
        try:
            download_url(
                spec.url,
                partial,
                sha256=spec.sha256 if checksum else None,
                size=spec.size if checksum else None,
                overwrite=True,
            )
            try:
                array = read_array(partial, spec.variable, ndim)
                self._verify(spec, partial, array, checksum=checksum, hashed=True)
            except ValueError as err:
                raise DownloadError(
                    f"{spec.url} was downloaded but is not the expected {spec.filename}: {err} "
                    "Nothing was kept; check the address (the scene's URL table) and try again."
                ) from err
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        return array

    def _verify(
        self,
        spec: SceneFile,
        path: Path,
        array: np.ndarray,
        checksum: bool,
        hashed: bool = False,
    ) -> None:
        """Check ``array``, read from ``path``, against ``spec`` (``hashed``: digest checked)."""
        if array.ndim == 3 and array.shape[2] != spec.shape[2]:
            raise ValueError(
                f"{path}: variable {spec.variable!r} has {array.shape[2]} bands, but "
                f"{self.TITLE} has {spec.shape[2]}. This is not the {self.TITLE} file: replace "
                f"it with the published one ({spec.url})."
            )
        if not checksum:
            return
        fix = (
            f"Delete it and download it again ({spec.url}), or pass checksum=False to load a "
            "modified copy on purpose."
        )
        if spec.sha256 is not None:
            if not hashed and sha256sum(path) != spec.sha256:
                raise ValueError(
                    f"{path}: sha256 does not match the published {spec.filename} "
                    f"({spec.sha256}); the file is corrupt or modified. {fix}"
                )
            return
        integer = np.issubdtype(array.dtype, np.integer)
        if tuple(array.shape) != spec.shape or integer != np.issubdtype(spec.dtype, np.integer):
            raise ValueError(
                f"{path}: variable {spec.variable!r} is {array.shape} {array.dtype}, but the "
                f"published file holds {spec.shape} {spec.dtype}. {fix}"
            )

    def _numbered_labels(self, labels: np.ndarray, path: Path) -> np.ndarray:
        """Map the file's raw class codes to 1..K (0 stays unlabelled)."""
        if self.RAW_LABEL_VALUES is None:
            return labels
        raw = np.asarray((0, *self.RAW_LABEL_VALUES))
        present = np.unique(labels)
        unknown = np.setdiff1d(present, raw)
        if unknown.size:
            raise ValueError(
                f"{path} holds label value(s) {unknown.tolist()[:10]}; {self.TITLE} uses only "
                f"{raw.tolist()} (0 = unlabelled). Replace it with the published "
                f"{self.LABEL_FILE.filename}."
            )
        lookup = np.zeros(int(raw.max()) + 1, dtype=np.int64)
        lookup[raw] = np.arange(raw.size)
        return lookup[labels.astype(np.int64)]
