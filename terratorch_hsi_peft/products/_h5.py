"""What the h5py readers share: the open file, and selecting bands in any order."""

from __future__ import annotations

import abc
import os

import h5py
import numpy as np

from terratorch_hsi_peft.products.base import ProductMetadata, SensorProduct

__all__ = ["H5Product", "band_selection"]


class H5Product(SensorProduct):
    """A product in one HDF5 file, kept open with h5py (``self._file``) until :meth:`close`.

    Subclasses implement :meth:`_read_metadata`; the file is closed again if it fails, so a
    refused file leaves no open handle.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(path)
        self._file = h5py.File(self.path, "r")
        try:
            self.metadata = self._read_metadata()
        except Exception:
            self._file.close()
            raise

    @abc.abstractmethod
    def _read_metadata(self) -> ProductMetadata:
        """The product's metadata, read from ``self._file``."""

    def close(self) -> None:
        """Close the HDF5 file."""
        self._file.close()


def band_selection(bands: np.ndarray) -> tuple[slice | list[int], np.ndarray]:
    """(HDF5 selection, reorder) for 0-based ``bands`` in any order, repeats allowed.

    h5py's fancy selection needs increasing indices and is slow, so a run of consecutive bands
    (the usual case: all bands, or all good ones of a block) becomes a slice. Index the selected
    axis of the result with ``reorder`` to get ``bands`` back in the asked order.
    """
    unique, reorder = np.unique(np.asarray(bands, dtype=np.int64), return_inverse=True)
    if unique.size and unique[-1] - unique[0] + 1 == unique.size:
        return slice(int(unique[0]), int(unique[-1]) + 1), reorder
    return unique.tolist(), reorder
