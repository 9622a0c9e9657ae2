"""PRISMA L2D geocoded surface reflectance (ASI), HDF-EOS5 read with h5py.

Sensor: PRISMA (PRecursore IperSpettrale della Missione Applicativa, ASI), VNIR 66 + SWIR 173
band slots, 400-2500 nm, 30 m pixels, ~30 x 30 km scenes.

Layout (``PRS_L2D_STD_<start>_<stop>_0001.he5``, HDF-EOS5 = HDF5):

- ``HDFEOS/SWATHS/PRS_L2D_HCO/Data Fields/VNIR_Cube`` and ``SWIR_Cube``: uint16 DN, h5py shape
  (rows, bands, cols) (bands in the middle: a window reads ``[rows, bands, cols]``);
- root attributes ``List_Cw_Vnir`` / ``List_Cw_Swir`` (band centres, nm, descending),
  ``List_Fwhm_*``, ``List_Cw_*_Flags`` (1 = valid), ``L2Scale{Vnir,Swir}{Min,Max}``,
  ``Epsg_Code``, ``Product_{UL,LR}corner_{easting,northing}``.

What the reader does: band slots with centre 0 (the first 3 VNIR, last 2 SWIR: 234 bands left)
are dropped; VNIR and SWIR bands are merged and sorted by ascending centre (the ~943-973 nm
overlap interleaves, as in EnMAP); slots flagged 0 are marked bad; reflectance =
``Min + DN * (Max - Min) / 65535`` per detector (scale/offset per band); pixels whose read bands
are all DN 0 are nodata (NaN), as the EnMAP-Box does (no nodata value is declared).

Corner semantics (unconfirmed: the ASI product specification was not available): the
``Product_*corner_*`` coordinates are taken as the **centres** of the corner pixels, as the
EnMAP-Box's importer does, so the pixel size is ``(LR - UL) / (n - 1)`` and the grid's outer edge
lies half a pixel beyond UL (HyperCoast instead takes UL as the edge and ``(LR - UL) / n``: the
two differ by half a pixel, 15 m). The CRS is ``EPSG:<Epsg_Code>`` (UTM).

Sources: lbusett/prismaread ``R/pr_*.R``; EnMAP-Box/enmap-box
``enmapboxprocessing/algorithm/importprismal2dalgorithm.py``; opengeos/HyperCoast
``hypercoast/prisma.py``; JamesTownend/PRISMA-tools (a real L2D printout);
``/work/shared/notes/sensor-products.md`` section 4.
"""

from __future__ import annotations

import h5py
import numpy as np
from affine import Affine
from rasterio.crs import CRS

from terratorch_hsi_peft.products._h5 import H5Product, band_selection
from terratorch_hsi_peft.products.base import ProductMetadata, Window

__all__ = ["PRISMA_CUBES", "PrismaProduct"]

_FIELDS = "HDFEOS/SWATHS/PRS_L2D_HCO/Data Fields"
#: detector name -> (cube path, attribute suffix)
PRISMA_CUBES = {"vnir": (f"{_FIELDS}/VNIR_Cube", "Vnir"), "swir": (f"{_FIELDS}/SWIR_Cube", "Swir")}
_DN_MAX = 65535.0


def _attr(f: h5py.File, name: str, where: str) -> np.ndarray:
    if name not in f.attrs:
        raise ValueError(
            f"{where}: the root attribute {name!r} is missing; is this a PRISMA L2D .he5 "
            "(L1 and L2B/C products have other layouts)?"
        )
    value = f.attrs[name]
    return np.ravel(value.decode() if isinstance(value, bytes) else value)


class PrismaProduct(H5Product):
    """A PRISMA L2D product, kept open with h5py; bands sorted by ascending wavelength."""

    format_name = "prisma"

    def _read_metadata(self) -> ProductMetadata:
        f, where = self._file, str(self.path)
        centres, widths, flags, scales, offsets, sources, slots = [], [], [], [], [], [], []
        rows = cols = None
        dtype = None
        for source, (cube_path, suffix) in enumerate(PRISMA_CUBES.values()):
            if cube_path not in f:
                raise ValueError(f"{where}: no {cube_path!r}; is this a PRISMA L2D .he5?")
            cube = f[cube_path]
            if rows is None:
                rows, _, cols = cube.shape
                dtype = cube.dtype
            elif (cube.shape[0], cube.shape[2]) != (rows, cols):
                raise ValueError(f"{where}: the VNIR and SWIR cubes have different grids.")
            cw = _attr(f, f"List_Cw_{suffix}", where).astype(np.float64)
            if cw.size != cube.shape[1]:
                raise ValueError(
                    f"{where}: List_Cw_{suffix} has {cw.size} centres for {cube.shape[1]} bands."
                )
            fwhm = np.ravel(f.attrs.get(f"List_Fwhm_{suffix}", np.full(cw.size, np.nan)))
            flag = np.ravel(f.attrs.get(f"List_Cw_{suffix}_Flags", np.ones(cw.size)))
            low = float(_attr(f, f"L2Scale{suffix}Min", where)[0])
            high = float(_attr(f, f"L2Scale{suffix}Max", where)[0])
            keep = np.flatnonzero(cw > 0)  # unused slots have centre 0
            centres.append(cw[keep])
            widths.append(np.asarray(fwhm, dtype=np.float64)[keep])
            flags.append(np.asarray(flag)[keep])
            scales.append(np.full(keep.size, (high - low) / _DN_MAX))
            offsets.append(np.full(keep.size, low))
            sources.append(np.full(keep.size, source))
            slots.append(keep)
        order = np.argsort(np.concatenate(centres), kind="stable")

        def pick(parts: list[np.ndarray]) -> np.ndarray:
            return np.concatenate(parts)[order]

        self._source, self._slot = pick(sources), pick(slots)
        fwhm = pick(widths)
        epsg = int(_attr(f, "Epsg_Code", where)[0])
        ul_e, ul_n, lr_e, lr_n = (
            float(_attr(f, f"Product_{name}", where)[0])
            for name in (
                "ULcorner_easting",
                "ULcorner_northing",
                "LRcorner_easting",
                "LRcorner_northing",
            )
        )
        # Corners are the centres of the corner pixels (see the module docstring).
        dx = (lr_e - ul_e) / (cols - 1) if cols > 1 else 30.0
        dy = (ul_n - lr_n) / (rows - 1) if rows > 1 else 30.0
        transform = Affine(dx, 0.0, ul_e - dx / 2, 0.0, -dy, ul_n + dy / 2)
        return ProductMetadata(
            bands=order.size,
            height=rows,
            width=cols,
            wavelengths=pick(centres),
            fwhm=None if np.isnan(fwhm).any() else fwhm,
            bad_bands=pick(flags) != 1,
            nodata=None,
            crs=CRS.from_epsg(epsg),
            transform=transform,
            scale=pick(scales),
            offset=pick(offsets),
            extra={"dtype": str(dtype), "nodata_rule": "all read bands DN 0"},
        )

    def _read_stored(self, window: Window, bands: np.ndarray) -> np.ndarray:
        rows, cols = window.slices()
        out = None
        for source, (cube_path, _) in enumerate(PRISMA_CUBES.values()):
            positions = np.flatnonzero(self._source[bands] == source)
            if positions.size == 0:
                continue
            slots = self._slot[bands[positions]]
            selection, reorder = band_selection(slots)
            block = self._file[cube_path][rows, selection, cols]  # (h, k, w)
            if out is None:
                out = np.empty((bands.size, *block[:, 0, :].shape), dtype=block.dtype)
            out[positions] = block[:, reorder, :].transpose(1, 0, 2)
        return out

    def read(self, window: Window | None = None, bands: np.ndarray | None = None) -> np.ndarray:
        """As :meth:`SensorProduct.read`; pixels whose read bands are all DN 0 are NaN."""
        values = super().read(window, bands)
        index = np.arange(self.metadata.bands) if bands is None else np.asarray(bands)
        floor = np.asarray(self.metadata.offset, dtype=np.float32)[index]
        # DN 0 gives exactly the detector's Min after scaling: all bands there = no data.
        empty = (values == floor[:, None, None]).all(axis=0)
        values[:, empty] = np.nan
        return values
