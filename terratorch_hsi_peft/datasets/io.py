"""Read hyperspectral cubes and label rasters from .mat (v5 and v7.3), .npy and GeoTIFF files.

Every failure names the file and says how to fix it: a missing file, a truncated or corrupt file,
a missing variable, or a .mat file holding several candidate arrays with no key to choose one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["SUPPORTED_SUFFIXES", "read_array"]

SUPPORTED_SUFFIXES = (".mat", ".npy", ".tif", ".tiff")


def read_array(
    path: str | Path, key: str | None = None, ndim: int = 3, missing_hint: str = ""
) -> np.ndarray:
    """Read one array from ``path``: a cube (``ndim=3``, as (H, W, C)) or labels (``ndim=2``).

    Args:
        path: a ``.mat`` (MATLAB v5 or v7.3/HDF5), ``.npy`` or GeoTIFF (``.tif``/``.tiff``) file.
        key: the variable to read from a ``.mat`` file. Without it, the only array with ``ndim``
            dimensions is taken; a file laid out as pixels-in-columns (a ``bands x N`` matrix with
            ``nRow``/``nCol`` scalars, as in the Jasper Ridge and Samson files) is recognised too.
        ndim: 3 for a cube, 2 for a label raster.
        missing_hint: appended to the error raised when the file does not exist (e.g. how to
            download it).

    Returns:
        The array as stored (dtype unchanged): (H, W, C) for a cube, (H, W) for labels. GeoTIFF
        bands (stored bands-first) are moved last; MATLAB v7.3 arrays (stored transposed) are
        transposed back.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is truncated or corrupt, the variable is missing or ambiguous, the
            array has the wrong number of dimensions, or the suffix is not supported.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist. {missing_hint}".rstrip())
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise ValueError(
            f"{path}: unsupported file type {suffix!r}. Convert it to one of "
            f"{', '.join(SUPPORTED_SUFFIXES)}."
        )
    if suffix != ".mat" and key is not None:
        raise ValueError(f"{path}: a key ({key!r}) only applies to .mat files; drop it.")
    try:
        content = _load(path, suffix)
    except Exception as err:  # each reader reports damage with its own exception types
        raise ValueError(
            f"{path} could not be read ({type(err).__name__}: {err}). The file is truncated or "
            "corrupt: delete it and download or export it again."
        ) from err
    array = _select_mat_array(path, content, key, ndim) if suffix == ".mat" else content
    if ndim == 2 and array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]  # a single-band label GeoTIFF
    if array.ndim != ndim:
        what = "a cube (H, W, bands)" if ndim == 3 else "a label raster (H, W)"
        raise ValueError(
            f"{path}: expected {what} with {ndim} dimensions, got shape {array.shape}. "
            "Pass the right file (or the right key for a .mat file)."
        )
    return array


def _load(path: Path, suffix: str) -> dict[str, object] | np.ndarray:
    if suffix == ".mat":
        return _load_mat_variables(path)
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    return _read_geotiff(path)


def _select_mat_array(
    path: Path, variables: dict[str, object], key: str | None, ndim: int
) -> np.ndarray:
    arrays = {
        name: value
        for name, value in variables.items()
        if isinstance(value, np.ndarray) and value.dtype.kind in "biuf"
    }
    listing = ", ".join(f"{name} {value.shape}" for name, value in arrays.items()) or "none"
    if key is not None:
        if key not in arrays:
            raise ValueError(
                f"{path} has no numeric variable {key!r}; it holds: {listing}. "
                "Pass one of these names as the key."
            )
        array = arrays[key]
        if ndim == 3 and array.ndim == 2 and _has_pixel_columns(arrays, array):
            return _pixel_columns_to_cube(arrays, array)
        return array
    candidates = [name for name, value in arrays.items() if value.ndim == ndim]
    if ndim == 3 and not candidates:
        candidates = [
            name
            for name, value in arrays.items()
            if value.ndim == 2 and _has_pixel_columns(arrays, value)
        ]
        if len(candidates) == 1:
            return _pixel_columns_to_cube(arrays, arrays[candidates[0]])
    if len(candidates) != 1:
        raise ValueError(
            f"{path}: cannot tell which variable to read ({len(candidates)} arrays with {ndim} "
            f"dimensions; the file holds: {listing}). Pass the variable name as the key."
        )
    return arrays[candidates[0]]


def _load_mat_variables(path: Path) -> dict[str, object]:
    import h5py
    import scipy.io

    if h5py.is_hdf5(path):  # MATLAB v7.3 files are HDF5, which scipy cannot read
        return _load_mat_v73(path)
    return scipy.io.loadmat(path)


def _load_mat_v73(path: Path) -> dict[str, np.ndarray]:
    import h5py

    with h5py.File(path, "r") as f:
        # MATLAB writes column-major arrays, so h5py sees every array with its axes reversed
        return {
            name: np.asarray(item).T
            for name, item in f.items()
            if isinstance(item, h5py.Dataset) and not name.startswith("#")
        }


def _scalar(arrays: dict[str, np.ndarray], name: str) -> int | None:
    value = arrays.get(name)
    if value is None or value.size != 1:
        return None
    return int(value.reshape(-1)[0])


def _has_pixel_columns(arrays: dict[str, np.ndarray], matrix: np.ndarray) -> bool:
    rows, cols = _scalar(arrays, "nRow"), _scalar(arrays, "nCol")
    return rows is not None and cols is not None and matrix.shape[1] == rows * cols


def _pixel_columns_to_cube(arrays: dict[str, np.ndarray], matrix: np.ndarray) -> np.ndarray:
    # Pixels are columns in MATLAB (column-major) order: pixel k sits at (k % nRow, k // nRow).
    rows, cols = _scalar(arrays, "nRow"), _scalar(arrays, "nCol")
    bands = matrix.shape[0]
    return np.ascontiguousarray(matrix.reshape(bands, cols, rows).transpose(2, 1, 0))


def _read_geotiff(path: Path) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as dataset:
        return np.moveaxis(dataset.read(), 0, -1)  # bands-first on disk
