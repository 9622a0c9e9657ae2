"""Write tiny sensor products in each format's real layout, with the format's own writers.

ENVI: the raw binary written in its interleave order plus a text header (the recipe in
``/work/shared/notes/sensor-products.md``; GDAL's ENVI driver reads it back). GeoTIFF: rasterio
(GDAL's GTiff driver) with band descriptions and band items. Each ``make_*`` returns a
:class:`FakeProduct` holding what was written and the physical values a reader must return
(``expected``: float32, bands first, NaN at nodata pixels), so tests compare against the arrays,
not against another reader.

Usage: ``python tests/data/make_fake_products.py OUT_DIR`` writes one product of each format.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS

SHAPE = (12, 10)  # (rows, cols)
BANDS = 24
#: a UTM grid for the projected fixtures: 30 m pixels, upper-left corner at (500000, 4100000).
CRS_UTM = CRS.from_epsg(32633)
TRANSFORM = Affine(30.0, 0.0, 500000.0, 0.0, -30.0, 4100000.0)
ENVI_DTYPES = {
    "uint8": 1,
    "int16": 2,
    "int32": 3,
    "float32": 4,
    "float64": 5,
    "uint16": 12,
    "uint32": 13,
    "int64": 14,
    "uint64": 15,
}
_ENVI_ORDER = {"bsq": (0, 1, 2), "bil": (1, 0, 2), "bip": (1, 2, 0)}


@dataclass
class FakeProduct:
    """A product written to disk and what reading it must give."""

    path: Path
    stored: np.ndarray  # (bands, rows, cols) as written
    expected: np.ndarray  # (bands, rows, cols) float32 physical values, NaN at nodata
    wavelengths: np.ndarray | None  # nm, in stored band order
    fwhm: np.ndarray | None = None
    bad_bands: np.ndarray | None = None
    nodata: float | None = None
    nodata_mask: np.ndarray | None = None  # (rows, cols) True where every band is nodata
    extra: dict[str, Any] = field(default_factory=dict)


def spectral_axis(bands: int = BANDS, start: float = 400.0, stop: float = 2500.0) -> np.ndarray:
    """Evenly spaced band centres in nm."""
    return np.linspace(start, stop, bands)


def fake_stored(
    dtype: str, bands: int = BANDS, shape: tuple[int, int] = SHAPE, seed: int = 0
) -> np.ndarray:
    """Random stored values of ``dtype`` (integers: 0-10000 like scaled reflectance)."""
    rng = np.random.default_rng(seed)
    if np.issubdtype(np.dtype(dtype), np.floating):
        return rng.uniform(0.0, 1.0, size=(bands, *shape)).astype(dtype)
    high = 200 if np.dtype(dtype).itemsize == 1 else 10000
    return rng.integers(0, high, size=(bands, *shape)).astype(dtype)


def nodata_pixels(shape: tuple[int, int] = SHAPE) -> np.ndarray:
    """(rows, cols) mask of the fixtures' nodata pixels: the first row's first three pixels and
    the last column's last two (edges, like a swath's or a tile's margin)."""
    mask = np.zeros(shape, dtype=bool)
    mask[0, :3] = True
    mask[-2:, -1] = True
    return mask


def _physical(stored: np.ndarray, scale, offset, nodata_mask: np.ndarray | None) -> np.ndarray:
    bands = stored.shape[0]
    scale = np.broadcast_to(np.asarray(scale, dtype=np.float32), (bands,))
    offset = np.broadcast_to(np.asarray(offset, dtype=np.float32), (bands,))
    values = stored.astype(np.float32) * scale[:, None, None] + offset[:, None, None]
    if nodata_mask is not None:
        values[:, nodata_mask] = np.nan
    return values.astype(np.float32)


def _envi_list(values) -> str:
    return "{" + ", ".join(str(v) for v in values) + "}"


def write_envi(binary: Path, stored: np.ndarray, interleave: str, header: dict[str, Any]) -> Path:
    """Write ``stored`` (bands, rows, cols) as ENVI ``binary`` + ``<binary stem>.hdr``.

    ``header`` adds keys (lists written as ``{..}``); returns the header path.
    """
    bands, rows, cols = stored.shape
    dtype = stored.dtype.newbyteorder("<")
    stored.astype(dtype).transpose(_ENVI_ORDER[interleave]).tofile(binary)
    lines = [
        "ENVI",
        "description = {fake product for terratorch-hsi-peft tests}",
        f"samples = {cols}",
        f"lines = {rows}",
        f"bands = {bands}",
        "header offset = 0",
        "file type = ENVI Standard",
        f"data type = {ENVI_DTYPES[np.dtype(stored.dtype).name]}",
        f"interleave = {interleave}",
        "byte order = 0",
    ]
    for key, value in header.items():
        text = _envi_list(value) if isinstance(value, list | tuple | np.ndarray) else value
        lines.append(f"{key} = {text}")
    hdr = binary.with_suffix(".hdr")
    hdr.write_text("\n".join(lines) + "\n")
    return hdr


def make_envi(
    folder: Path,
    interleave: str = "bsq",
    dtype: str = "int16",
    *,
    name: str = "scene",
    suffix: str = ".img",
    bands: int = BANDS,
    shape: tuple[int, int] = SHAPE,
    units: str = "Nanometers",
    gain: float | None = 1e-4,
    offset: float = 0.0,
    nodata: float | None = -9999,
    bad: tuple[int, ...] = (5, 6, 17),
    with_wavelengths: bool = True,
    map_info: bool = True,
    seed: int = 0,
) -> FakeProduct:
    """An ENVI product like an AVIRIS-NG reflectance file (gain 1e-4 for integer data)."""
    folder.mkdir(parents=True, exist_ok=True)
    stored = fake_stored(dtype, bands, shape, seed)
    mask = None
    if nodata is not None:
        mask = nodata_pixels(shape)
        stored[:, mask] = nodata
    wavelengths = spectral_axis(bands)
    fwhm = np.full(bands, 10.0)
    factor = 1e-3 if units.lower().startswith("micro") else 1.0
    header: dict[str, Any] = {}
    if with_wavelengths:
        header["wavelength units"] = units
        header["wavelength"] = [f"{w * factor:.6f}" for w in wavelengths]
        header["fwhm"] = [f"{w * factor:.6f}" for w in fwhm]
    bbl = np.ones(bands, dtype=int)
    bbl[list(bad)] = 0
    header["bbl"] = bbl.tolist()
    if nodata is not None:
        header["data ignore value"] = nodata
    if gain is not None:
        header["data gain values"] = [gain] * bands
        header["data offset values"] = [offset] * bands
    if map_info:
        header["map info"] = (
            "{UTM, 1, 1, 500000.0, 4100000.0, 30.0, 30.0, 33, North, WGS-84, units=Meters}"
        )
    binary = folder / f"{name}{suffix}"
    hdr = write_envi(binary, stored, interleave, header)
    expected = _physical(stored, gain or 1.0, offset if gain is not None else 0.0, mask)
    bad_bands = bbl == 0
    return FakeProduct(
        path=hdr,
        stored=stored,
        expected=expected,
        wavelengths=wavelengths if with_wavelengths else None,
        fwhm=fwhm if with_wavelengths else None,
        bad_bands=bad_bands,
        nodata=None if nodata is None else float(nodata),
        nodata_mask=mask,
        extra={"binary": binary},
    )


def make_geotiff(
    folder: Path,
    dtype: str = "float32",
    *,
    name: str = "scene.tif",
    bands: int = BANDS,
    shape: tuple[int, int] = SHAPE,
    style: str = "items",
    scale: float = 1.0,
    offset: float = 0.0,
    nodata: float | None = -9999.0,
    seed: int = 0,
) -> FakeProduct:
    """A GeoTIFF with per-band wavelengths given as band items (``style="items"``: the
    ``wavelength`` / ``wavelength_units`` / ``fwhm`` keys GDAL's ENVI driver also sets), as
    band descriptions (``"descriptions"``: ``"Band 3 (0.45 um)"``), or not at all (``"none"``)."""
    folder.mkdir(parents=True, exist_ok=True)
    stored = fake_stored(dtype, bands, shape, seed)
    mask = None
    if nodata is not None:
        mask = nodata_pixels(shape)
        stored[:, mask] = nodata
    wavelengths = spectral_axis(bands)
    path = folder / name
    profile = {
        "driver": "GTiff",
        "height": shape[0],
        "width": shape[1],
        "count": bands,
        "dtype": dtype,
        "crs": CRS_UTM,
        "transform": TRANSFORM,
        "nodata": nodata,
    }
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(stored)
        ds.scales = [scale] * bands
        ds.offsets = [offset] * bands
        for band in range(1, bands + 1):
            if style == "items":
                ds.update_tags(
                    band,
                    wavelength=f"{wavelengths[band - 1]:.4f}",
                    wavelength_units="nm",
                    fwhm="10.0",
                )
            elif style == "descriptions":
                um = wavelengths[band - 1] / 1000
                ds.set_band_description(band, f"Band {band} ({um:.6f} um)")
    return FakeProduct(
        path=path,
        stored=stored,
        expected=_physical(stored, scale, offset, mask),
        wavelengths=None if style == "none" else wavelengths,
        fwhm=np.full(bands, 10.0) if style == "items" else None,
        bad_bands=np.zeros(bands, dtype=bool),
        nodata=nodata,
        nodata_mask=mask,
    )


def main(out_dir: str) -> None:
    out = Path(out_dir)
    make_envi(out / "envi")
    make_geotiff(out / "geotiff")


if __name__ == "__main__":
    main(sys.argv[1])
