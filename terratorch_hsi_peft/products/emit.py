"""EMIT L2A surface reflectance (NetCDF4), read with h5py; orthorectification through the GLT.

Sensor: EMIT (Earth Surface Mineral Dust Source Investigation, imaging spectrometer on the ISS),
285 bands, 381-2493 nm, ~60 m pixels, 1242 cross-track samples.

Layout (``EMIT_L2A_RFL_001_<YYYYMMDDTHHMMSS>_<orbit>_<scene>.nc``, NETCDF4 = HDF5):

- root ``reflectance``: float32 (downtrack, crosstrack, bands), ``_FillValue`` -9999, unitless
  reflectance (bands last: a window reads ``[rows, cols, bands]`` and is transposed);
- ``sensor_band_parameters/``: ``wavelengths`` and ``fwhm`` (nm), ``good_wavelengths`` (uint8,
  1 good / 0 bad: the water-vapour bands, which hold -0.1);
- ``location/``: ``lon``, ``lat``, ``elev`` (downtrack, crosstrack) and the geometry lookup
  table ``glt_x`` (cross-track sample) / ``glt_y`` (down-track line): int32 (ortho_y, ortho_x),
  1-based, 0 where no swath pixel maps;
- global attributes ``geotransform`` (GDAL 6-tuple of the GLT's EPSG:4326 grid), ``spatial_ref``.

The swath itself has no CRS or transform (``metadata.crs`` / ``transform`` are ``None``); the GLT
and its grid are kept in ``metadata.extra`` (``glt_x``, ``glt_y``, ``geotransform``,
``ortho_crs``) so a class map of the swath can be put on the map grid by
:func:`emit_orthorectify` (``out[i, j] = map[|glt_y| - 1, |glt_x| - 1]``: JPL's own tool takes
``abs`` because negative entries mark nearest-neighbour infill; whether NetCDF GLTs hold negatives
is unconfirmed, ``abs`` is harmless if not).

Sources: emit-sds/emit-sds-l2a ``output_conversion.py``; emit-sds/emit-utils
``emit_utils/daac_converter.py`` (``add_loc``, ``add_glt``); nasa/EMIT-Data-Resources
``python/modules/emit_tools.py`` (``apply_glt``); opengeos/HyperCoast ``hypercoast/emit.py``;
``/work/shared/notes/sensor-products.md`` section 2.
"""

from __future__ import annotations

from typing import Any

import h5py
import numpy as np
from affine import Affine
from rasterio.crs import CRS

from terratorch_hsi_peft.products._h5 import H5Product, band_selection
from terratorch_hsi_peft.products.base import ProductMetadata, Window

__all__ = ["EmitProduct", "emit_orthorectify"]


def _sorted_read(dataset: h5py.Dataset, rows: slice, cols: slice, bands: np.ndarray) -> np.ndarray:
    """``dataset[rows, cols, bands]`` for any band order (h5py wants increasing indices)."""
    selection, reorder = band_selection(bands)
    return dataset[rows, cols, selection][:, :, reorder]


class EmitProduct(H5Product):
    """An EMIT L2A reflectance NetCDF, kept open with h5py; windows of the swath."""

    format_name = "emit"

    def _read_metadata(self) -> ProductMetadata:
        f = self._file
        missing = [
            name for name in ("reflectance", "sensor_band_parameters/wavelengths") if name not in f
        ]
        if missing:
            raise ValueError(
                f"{self.path}: not an EMIT L2A reflectance file (no {', '.join(missing)}); "
                "pass an EMIT_L2A_RFL_*.nc, or another format= for other products."
            )
        cube = f["reflectance"]
        height, width, bands = cube.shape
        params = f["sensor_band_parameters"]
        wavelengths = np.asarray(params["wavelengths"][()], dtype=np.float64)
        fwhm = np.asarray(params["fwhm"][()], dtype=np.float64) if "fwhm" in params else None
        bad = np.zeros(bands, dtype=bool)
        if "good_wavelengths" in params:
            bad = np.asarray(params["good_wavelengths"][()]) != 1
        fill = cube.attrs.get("_FillValue")
        extra: dict[str, Any] = {"dtype": str(cube.dtype)}
        if "location/glt_x" in f and "location/glt_y" in f:
            extra["glt_x"] = np.asarray(f["location/glt_x"][()], dtype=np.int32)
            extra["glt_y"] = np.asarray(f["location/glt_y"][()], dtype=np.int32)
        if "geotransform" in f.attrs:
            extra["geotransform"] = tuple(float(v) for v in np.ravel(f.attrs["geotransform"]))
            extra["ortho_transform"] = Affine.from_gdal(*extra["geotransform"])
        if "spatial_ref" in f.attrs:
            wkt = f.attrs["spatial_ref"]
            extra["ortho_crs"] = CRS.from_wkt(wkt.decode() if isinstance(wkt, bytes) else wkt)
        return ProductMetadata(
            bands=bands,
            height=height,
            width=width,
            wavelengths=wavelengths,
            fwhm=fwhm,
            bad_bands=bad,
            nodata=None if fill is None else float(np.ravel(fill)[0]),
            crs=None,
            transform=None,
            extra=extra,
        )

    def _read_stored(self, window: Window, bands: np.ndarray) -> np.ndarray:
        rows, cols = window.slices()
        block = _sorted_read(self._file["reflectance"], rows, cols, bands)
        return np.ascontiguousarray(block.transpose(2, 0, 1))


def emit_orthorectify(
    class_map_swath: np.ndarray, glt_x: np.ndarray, glt_y: np.ndarray, fill: float | int
) -> np.ndarray:
    """Put a map of the EMIT swath on the GLT's grid: ``out[..., i, j] = map[..., y - 1, x - 1]``.

    Args:
        class_map_swath: (..., downtrack, crosstrack) map of the swath (class map, or
            probabilities with leading class axis).
        glt_x, glt_y: (ortho_y, ortho_x) 1-based cross-track sample / down-track line of each
            grid cell, 0 where none (``metadata.extra["glt_x"]`` / ``["glt_y"]``); negative
            values (nearest-neighbour infill in JPL's GLTs) are used by their absolute value.
        fill: the value of grid cells no swath pixel maps to.

    Returns:
        (..., ortho_y, ortho_x) array of the map's dtype; its grid is
        ``metadata.extra["ortho_transform"]`` in ``metadata.extra["ortho_crs"]``.

    Raises:
        ValueError: GLTs of different shapes, or pointing outside the swath (the wrong GLT).
    """
    glt_x = np.abs(np.asarray(glt_x, dtype=np.int64))
    glt_y = np.abs(np.asarray(glt_y, dtype=np.int64))
    if glt_x.shape != glt_y.shape or glt_x.ndim != 2:
        raise ValueError(
            f"glt_x {glt_x.shape} and glt_y {glt_y.shape} must be 2-D of the same shape."
        )
    swath = np.asarray(class_map_swath)
    height, width = swath.shape[-2:]
    valid = (glt_x > 0) & (glt_y > 0)
    if valid.any() and (glt_y[valid].max() > height or glt_x[valid].max() > width):
        raise ValueError(
            f"The GLT points at line {glt_y[valid].max()} / sample {glt_x[valid].max()} of a "
            f"{height}x{width} swath map: the map and the GLT come from different scenes."
        )
    out = np.full((*swath.shape[:-2], *glt_x.shape), fill, dtype=swath.dtype)
    out[..., valid] = swath[..., glt_y[valid] - 1, glt_x[valid] - 1]
    return out
