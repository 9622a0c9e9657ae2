"""ENVI and GeoTIFF products read through rasterio (GDAL), one window at a time.

**ENVI** (``.hdr`` text header + raw binary, BSQ/BIL/BIP, e.g. AVIRIS-NG / AVIRIS-3 ``*_img``):
GDAL's ENVI driver opens the binary and finds ``name.ext.hdr`` or ``name.hdr`` beside it; every
header key is in the dataset's ``ENVI`` metadata domain with spaces turned into ``_``
(``wavelength``, ``wavelength_units``, ``fwhm``, ``bbl``, ``data_ignore_value``,
``data_gain_values``, ``data_offset_values``, ``reflectance_scale_factor``); ``map info`` /
``coordinate system string`` become the CRS and transform. Sources: GDAL
``frmts/raw/envidataset.cpp``; spectralpython ``spectral/io/envi.py`` (data types, interleaves);
``/work/shared/notes/sensor-products.md`` section 1.

**GeoTIFF** with per-band spectral metadata: band items ``wavelength`` (+ ``wavelength_units``,
``fwhm``), GDAL's ``IMAGERY`` domain ``CENTRAL_WAVELENGTH_UM`` / ``FWHM_UM``, or band descriptions
such as ``"B12 (2190.0 nm)"`` or ``"0.45 um"``; nodata, scale and offset from the band's own
fields. A GeoTIFF written from an ENVI file by ``gdal_translate`` carries the ``ENVI`` domain too,
and it is read first, as for ENVI.

Wavelengths are returned in nm: micrometres (``Micrometers``, ``um``, ``µm``, ``microns``) are
multiplied by 1000; without units, centres below 100 are taken as micrometres (no hyperspectral
band centre lies below 100 nm) and the FWHM takes the centres' unit.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.errors
import rasterio.windows

from terratorch_hsi_peft.products.base import ProductMetadata, SensorProduct, Window

__all__ = [
    "EnviProduct",
    "GeoTiffProduct",
    "RasterioProduct",
    "envi_binary_for",
    "nanometre_factor",
]

#: binary-file extensions tried beside an ENVI header, in order (spectralpython's list + GDAL's).
ENVI_BINARY_SUFFIXES = ("", ".img", ".dat", ".bsq", ".bil", ".bip", ".raw", ".sli", ".hyspex")

_MICRO = {"micrometers", "micrometer", "micrometres", "micrometre", "microns", "micron", "um", "µm"}
_NANO = {"nanometers", "nanometer", "nanometres", "nanometre", "nm"}
# A band description ending in a number with a unit, e.g. "Band 3 (0.4500 Micrometers)", "450 nm".
_DESCRIPTION_WAVELENGTH = re.compile(
    r"([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)\s*\(?\s*(nanometers?|nm|micrometers?|microns?|um|µm)\)?\s*$",
    re.IGNORECASE,
)


def nanometre_factor(centres: np.ndarray, units: str | None, where: str) -> float:
    """What band centres (and widths) given in ``units`` are multiplied by to be in nm.

    Without units (or ``Unknown``) the centres decide: below 100 they are micrometres (no
    hyperspectral band centre lies below 100 nm). Widths take the centres' factor, never their
    own guess (a 10 nm FWHM is below 100 too).

    Raises:
        ValueError: units that are not a length (wavenumbers, indices...), naming ``where``.
    """
    unit = (units or "").strip().lower()
    if unit in _NANO:
        return 1.0
    if unit in _MICRO:
        return 1000.0
    if unit in ("", "unknown"):
        centres = np.asarray(centres, dtype=np.float64)
        return 1000.0 if centres.size and np.nanmax(centres) < 100 else 1.0
    raise ValueError(
        f"{where}: wavelength units {units!r} are not nanometres or micrometres; give the band "
        "centres in nm (e.g. `wavelength units = Nanometers` in the ENVI header)."
    )


def _envi_list(text: str | None) -> list[str] | None:
    """The items of an ENVI ``{a, b, ...}`` value (``None`` when absent or empty)."""
    if text is None:
        return None
    items = [item.strip() for item in text.strip().strip("{}").split(",")]
    items = [item for item in items if item]
    return items or None


def _envi_floats(tags: dict[str, str], key: str, bands: int, where: str) -> np.ndarray | None:
    items = _envi_list(tags.get(key))
    if items is None:
        return None
    if len(items) != bands:
        raise ValueError(
            f"{where}: header key `{key.replace('_', ' ')}` lists {len(items)} values for "
            f"{bands} bands; fix the header so it gives one value per band."
        )
    try:
        return np.array([float(item) for item in items], dtype=np.float64)
    except ValueError as err:
        raise ValueError(f"{where}: header key `{key.replace('_', ' ')}` is not numeric.") from err


def envi_binary_for(path: Path) -> Path:
    """The binary file of the ENVI product named by ``path`` (the header or the binary itself).

    Raises:
        FileNotFoundError: no binary beside a header, or no header beside a binary.
    """
    if path.suffix.lower() == ".hdr":
        stem = path.with_suffix("")
        for suffix in ENVI_BINARY_SUFFIXES:
            candidate = stem.with_name(stem.name + suffix)
            if candidate.is_file():
                return candidate
        tried = ", ".join(stem.name + s for s in ENVI_BINARY_SUFFIXES)
        raise FileNotFoundError(
            f"{path}: no ENVI binary file beside this header (tried {tried}); put the binary "
            "next to its header under one of these names."
        )
    for header in (path.with_name(path.name + ".hdr"), path.with_suffix(".hdr")):
        if header.is_file():
            return path
    raise FileNotFoundError(
        f"{path}: no ENVI header beside this file (looked for {path.name}.hdr and "
        f"{path.with_suffix('.hdr').name}); an ENVI product needs its .hdr next to the binary."
    )


class RasterioProduct(SensorProduct):
    """A raster opened with rasterio and kept open; windows read with ``dataset.read``.

    Spectral metadata come from the ``ENVI`` domain when present (ENVI files, GeoTIFFs converted
    from ENVI), otherwise from the band items, the ``IMAGERY`` domain or the band descriptions.
    """

    format_name = "raster"

    def __init__(self, path: str | os.PathLike, dataset_path: Path | None = None) -> None:
        super().__init__(path)
        # `terratorch` sets GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR for cloud reads; GDAL then
        # cannot see the files beside the one opened (an ENVI header, a .aux.xml), so listing
        # the folder is switched back on for this open.
        with warnings.catch_warnings(), rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="NO"):
            # A product without map info (a swath, a lab cube) is normal: crs/transform are None.
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            self._dataset = rasterio.open(dataset_path or self.path)
        try:
            self.metadata = self._read_metadata()
        except Exception:
            self._dataset.close()
            raise

    @property
    def dataset(self) -> Any:
        """The open ``rasterio`` dataset (for callers that need GDAL facts not in metadata)."""
        return self._dataset

    def _read_metadata(self) -> ProductMetadata:
        ds = self._dataset
        where = str(self.path)
        if any(np.issubdtype(np.dtype(d), np.complexfloating) for d in ds.dtypes):
            raise ValueError(
                f"{where}: complex-valued bands ({ds.dtypes[0]}) are not reflectance; convert "
                "the product to a real data type first."
            )
        bands = ds.count
        envi = ds.tags(ns="ENVI") if "ENVI" in (ds.tag_namespaces() or []) else {}
        wavelengths, fwhm = self._spectral(envi, bands, where)
        bad = np.zeros(bands, dtype=bool)
        bbl = _envi_floats(envi, "bbl", bands, where)
        if bbl is not None:
            bad = bbl == 0  # ENVI's bad band list: 1 good, 0 bad
        nodata = ds.nodata
        if nodata is None and "data_ignore_value" in envi:
            nodata = float(envi["data_ignore_value"])
        scale = np.array(ds.scales, dtype=np.float64)
        offset = np.array(ds.offsets, dtype=np.float64)
        for key, target in (("data_gain_values", scale), ("data_offset_values", offset)):
            # GDAL maps these to scale/offset; read them again in case a driver version does not.
            values = _envi_floats(envi, key, bands, where)
            if values is not None:
                target[:] = values
        factor = envi.get("reflectance_scale_factor")
        if factor is not None and "data_gain_values" not in envi:
            # ENVI: the value that, divided into the data, gives reflectance 0-1.
            scale = scale / float(factor)
        crs = ds.crs if ds.crs else None
        transform = None if crs is None and ds.transform.is_identity else ds.transform
        return ProductMetadata(
            bands=bands,
            height=ds.height,
            width=ds.width,
            wavelengths=wavelengths,
            fwhm=fwhm,
            bad_bands=bad,
            nodata=None if nodata is None else float(nodata),
            crs=crs,
            transform=transform,
            scale=scale,
            offset=offset,
            extra={"driver": ds.driver, "dtype": ds.dtypes[0], "band_names": ds.descriptions},
        )

    def _spectral(
        self, envi: dict[str, str], bands: int, where: str
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(wavelengths, fwhm) in nm, from the ENVI domain, band items, IMAGERY or descriptions."""
        ds = self._dataset
        wavelengths = _envi_floats(envi, "wavelength", bands, where)
        if wavelengths is not None:
            factor = nanometre_factor(wavelengths, envi.get("wavelength_units"), where)
            fwhm = _envi_floats(envi, "fwhm", bands, where)
            return wavelengths * factor, None if fwhm is None else fwhm * factor
        centres: list[float] = []
        widths: list[float | None] = []
        for band in range(1, bands + 1):
            tags = {key.lower(): value for key, value in ds.tags(band).items()}
            imagery = ds.tags(band, ns="IMAGERY") if "IMAGERY" in _band_domains(ds, band) else {}
            description = ds.descriptions[band - 1] or ""
            match = _DESCRIPTION_WAVELENGTH.search(description)
            if "wavelength" in tags:
                units = tags.get("wavelength_units") or ds.tags().get("wavelength_units")
                centre = float(tags["wavelength"])
                factor = nanometre_factor(np.array([centre]), units, where)
                centre *= factor
                width = tags.get("fwhm")
                widths.append(None if width is None else float(width) * factor)
            elif "CENTRAL_WAVELENGTH_UM" in imagery:
                centre = float(imagery["CENTRAL_WAVELENGTH_UM"]) * 1000.0
                width = imagery.get("FWHM_UM")
                widths.append(None if width is None else float(width) * 1000.0)
            elif match:
                value = float(match.group(1))
                centre = value * nanometre_factor(np.array([value]), match.group(2), where)
                widths.append(None)
            else:
                return None, None  # one band without a centre: the product has no wavelengths
            centres.append(float(centre))
        fwhm = None if any(w is None for w in widths) else np.array(widths, dtype=np.float64)
        return np.array(centres, dtype=np.float64), fwhm

    def _read_stored(self, window: Window, bands: np.ndarray) -> np.ndarray:
        win = rasterio.windows.Window(window.col, window.row, window.width, window.height)
        return self._dataset.read((np.asarray(bands) + 1).tolist(), window=win)

    def close(self) -> None:
        """Close the rasterio dataset."""
        self._dataset.close()


def _band_domains(ds: Any, band: int) -> list[str]:
    try:
        return list(ds.tag_namespaces(band) or [])
    except Exception:  # a driver without per-band domains
        return []


class EnviProduct(RasterioProduct):
    """An ENVI product: ``path`` is the ``.hdr`` header or the raw binary beside it."""

    format_name = "envi"

    def __init__(self, path: str | os.PathLike) -> None:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: check the product path.")
        super().__init__(path, dataset_path=envi_binary_for(path))
        if self._dataset.driver != "ENVI":
            driver = self._dataset.driver
            self._dataset.close()
            raise ValueError(
                f"{path}: GDAL opened it as {driver}, not ENVI; check that the header starts "
                "with the line `ENVI` and sits next to the binary."
            )


class GeoTiffProduct(RasterioProduct):
    """A GeoTIFF (or any single raster GDAL opens) with per-band wavelengths where given."""

    format_name = "geotiff"
