"""What the h5py readers share: selecting bands in any order from an HDF5 dataset."""

from __future__ import annotations

import numpy as np

__all__ = ["band_selection"]


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
