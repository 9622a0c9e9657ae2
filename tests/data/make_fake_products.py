"""Write tiny sensor products in each format's real layout, with the format's own writers.

ENVI: the raw binary written in its interleave order plus a text header (the recipe in
``/work/shared/notes/sensor-products.md``; GDAL's ENVI driver reads it back). GeoTIFF: rasterio
(GDAL's GTiff driver) with band descriptions and band items. Each ``make_*`` returns a
:class:`FakeProduct` holding what was written and the physical values a reader must return
(``expected``: float32, bands first, NaN at nodata pixels), so tests compare against the arrays,
not against another reader.

EMIT (NetCDF4) and PRISMA (HDF-EOS5) are written with h5py in the products' group/variable
layout (EMIT's dimensions as HDF5 dimension scales, as netCDF-4 stores them); EnMAP is a
rasterio GeoTIFF plus a METADATA.XML written with ElementTree.

Usage: ``python tests/data/make_fake_products.py OUT_DIR`` writes one product of each format.
"""

from __future__ import annotations

import json
import sys
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import rasterio
import rasterio.errors
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
    "complex64": 6,
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
    units: str | None = "Nanometers",
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
    factor = 1e-3 if (units or "").lower().startswith("micro") else 1.0
    header: dict[str, Any] = {}
    if with_wavelengths and units is not None:
        header["wavelength units"] = units
    if with_wavelengths:
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


def _netcdf_dims(f: h5py.File, sizes: dict[str, int]) -> None:
    """Root dimensions as netCDF-4 writes them: dimension scales without a variable."""
    for name, size in sizes.items():
        dim = f.create_dataset(name, shape=(size,), dtype="f4")
        dim.make_scale(f"This is a netCDF dimension but not a netCDF variable. {size:10d}")


def _attach(dataset: h5py.Dataset, f: h5py.File, dims: tuple[str, ...]) -> None:
    for axis, name in enumerate(dims):
        dataset.dims[axis].attach_scale(f[name])


def emit_glt(shape: tuple[int, int] = SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """A GLT rotating the swath by 90 degrees inside a 1-cell empty border.

    Ortho cell ``(1 + i, 1 + j)`` shows swath pixel ``(rows - 1 - j, i)`` (1-based in the GLT);
    one cell holds negative indices (JPL's mark for nearest-neighbour infill).
    """
    rows, cols = shape
    glt_x = np.zeros((cols + 2, rows + 2), dtype=np.int32)
    glt_y = np.zeros_like(glt_x)
    i, j = np.meshgrid(np.arange(cols), np.arange(rows), indexing="ij")
    glt_x[1:-1, 1:-1] = i + 1
    glt_y[1:-1, 1:-1] = rows - j
    glt_x[1, 1], glt_y[1, 1] = -glt_x[1, 1], -glt_y[1, 1]
    return glt_x, glt_y


def make_emit(
    folder: Path,
    *,
    bands: int = BANDS,
    shape: tuple[int, int] = SHAPE,
    bad: tuple[int, ...] = (9, 10, 15),
    seed: int = 0,
) -> FakeProduct:
    """An EMIT L2A RFL NetCDF: float32 (downtrack, crosstrack, bands), fill -9999, GLT."""
    folder.mkdir(parents=True, exist_ok=True)
    stored = fake_stored("float32", bands, shape, seed)
    good = np.ones(bands, dtype=np.uint8)
    good[list(bad)] = 0
    stored[list(bad)] = -0.1  # EMIT's bad bands hold -0.1
    mask = nodata_pixels(shape)
    stored[:, mask] = -9999.0
    wavelengths = spectral_axis(bands, 381.0, 2493.0)
    fwhm = np.full(bands, 8.5)
    glt_x, glt_y = emit_glt(shape)
    geotransform = (-120.0, 0.0005, 0.0, 35.0, 0.0, -0.0005)
    path = folder / "EMIT_L2A_RFL_001_20230101T000000_2300100_001.nc"
    with h5py.File(path, "w") as f:
        _netcdf_dims(
            f,
            {
                "downtrack": shape[0],
                "crosstrack": shape[1],
                "bands": bands,
                "ortho_y": glt_x.shape[0],
                "ortho_x": glt_x.shape[1],
            },
        )
        f.attrs["geotransform"] = np.array(geotransform)
        f.attrs["spatial_ref"] = CRS.from_epsg(4326).to_wkt()
        rfl = f.create_dataset("reflectance", data=stored.transpose(1, 2, 0))
        rfl.attrs["_FillValue"] = np.float32(-9999.0)
        rfl.attrs["units"] = "unitless"
        _attach(rfl, f, ("downtrack", "crosstrack", "bands"))
        params = f.create_group("sensor_band_parameters")
        params["wavelengths"] = wavelengths.astype(np.float32)
        params["fwhm"] = fwhm.astype(np.float32)
        params["good_wavelengths"] = good
        location = f.create_group("location")
        for name, array in (("glt_x", glt_x), ("glt_y", glt_y)):
            location.create_dataset(name, data=array, compression="gzip")
        lat = np.linspace(35.0, 34.99, shape[0])[:, None] + np.zeros(shape)
        location["lat"] = lat
        location["lon"] = np.linspace(-120.0, -119.99, shape[1])[None, :] + np.zeros(shape)
        location["elev"] = np.zeros(shape)
    return FakeProduct(
        path=path,
        stored=stored,
        expected=_physical(stored, 1.0, 0.0, mask),
        wavelengths=wavelengths.astype(np.float32).astype(np.float64),
        fwhm=fwhm,
        bad_bands=good == 0,
        nodata=-9999.0,
        nodata_mask=mask,
        extra={"glt_x": glt_x, "glt_y": glt_y, "geotransform": geotransform},
    )


def make_enmap(
    folder: Path,
    *,
    bands: int = BANDS,
    shape: tuple[int, int] = SHAPE,
    declare_nodata: bool = True,
    seed: int = 0,
) -> FakeProduct:
    """An EnMAP L2A folder: int16 SPECTRAL_IMAGE.TIF (nodata -32768) + METADATA.XML (gain 1e-4)."""
    stem = "ENMAP01-____L2A-DT0000001234_20230101T100000Z_001_V010400_20230102T000000Z"
    product = folder / stem
    product.mkdir(parents=True, exist_ok=True)
    stored = fake_stored("int16", bands, shape, seed)
    mask = nodata_pixels(shape)
    stored[:, mask] = -32768
    wavelengths = spectral_axis(bands, 418.0, 2445.0)
    fwhm = np.full(bands, 9.0)
    gain, offset = 1e-4, 0.0
    profile = {
        "driver": "GTiff",
        "height": shape[0],
        "width": shape[1],
        "count": bands,
        "dtype": "int16",
        "crs": CRS_UTM,
        "transform": TRANSFORM,
        "nodata": -32768 if declare_nodata else None,
    }
    with rasterio.open(product / f"{stem}-SPECTRAL_IMAGE.TIF", "w", **profile) as ds:
        ds.write(stored)
    root = ET.Element("level_X")
    specific = ET.SubElement(root, "specific")
    characterisation = ET.SubElement(specific, "bandCharacterisation")
    for band in range(bands):
        entry = ET.SubElement(characterisation, "bandID", number=str(band + 1))
        for tag, value in (
            ("wavelengthCenterOfBand", f"{wavelengths[band]:.4f}"),
            ("FWHMOfBand", f"{fwhm[band]:.4f}"),
            ("GainOfBand", f"{gain}"),
            ("OffsetOfBand", f"{offset}"),
        ):
            ET.SubElement(entry, tag).text = value
    for detector, channels in (("vnir", range(1, 92)), ("swir", range(1, 135))):
        quality = ET.SubElement(specific, f"{detector}ProductQuality")
        ET.SubElement(quality, "expectedChannelsList").text = ",".join(map(str, channels))
    ET.ElementTree(root).write(product / f"{stem}-METADATA.XML", xml_declaration=True)
    return FakeProduct(
        path=product,
        stored=stored,
        expected=_physical(stored, gain, offset, mask),
        wavelengths=wavelengths,
        fwhm=fwhm,
        bad_bands=np.zeros(bands, dtype=bool),
        nodata=-32768.0,
        nodata_mask=mask,
    )


def make_prisma(folder: Path, *, shape: tuple[int, int] = SHAPE, seed: int = 0) -> FakeProduct:
    """A PRISMA L2D .he5: uint16 VNIR (8 slots) and SWIR (10 slots) cubes (rows, bands, cols),
    centres descending with unused slots at 0 (first 2 VNIR, last SWIR), overlapping near
    950 nm; one flagged-invalid slot; corners as pixel centres of the module's UTM grid."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cw = {
        "Vnir": np.array([0, 0, 975.0, 900.0, 800.0, 650.0, 500.0, 420.0]),
        "Swir": np.array([2450.0, 2200.0, 1900.0, 1600.0, 1400.0, 1200.0, 1050.0, 960.0, 945.0, 0]),
    }
    scale = {"Vnir": (0.0, 1.0), "Swir": (0.0, 0.8)}
    flags = {name: (c > 0).astype(np.uint8) for name, c in cw.items()}
    flags["Swir"][4] = 0  # the 1400 nm slot flagged invalid
    mask = nodata_pixels(shape)
    cubes = {}
    for name, centres in cw.items():
        cube = rng.integers(1, 65535, size=(shape[0], centres.size, shape[1])).astype(np.uint16)
        cube[mask[:, None, :].repeat(centres.size, axis=1)] = 0
        cubes[name] = cube
    path = folder / "PRS_L2D_STD_20230101100000_20230101100004_0001.he5"
    fields = "HDFEOS/SWATHS/PRS_L2D_HCO/Data Fields"
    with h5py.File(path, "w") as f:
        for name, cube in cubes.items():
            f.create_dataset(f"{fields}/{name.upper()}_Cube", data=cube)
            f.create_dataset(f"{fields}/{name.upper()}_PIXEL_L2_ERR_MATRIX", data=cube * 0)
            f.attrs[f"List_Cw_{name}"] = cw[name].astype(np.float32)
            f.attrs[f"List_Fwhm_{name}"] = np.where(cw[name] > 0, 12.0, 0).astype(np.float32)
            f.attrs[f"List_Cw_{name}_Flags"] = flags[name]
            f.attrs[f"L2Scale{name}Min"] = np.float32(scale[name][0])
            f.attrs[f"L2Scale{name}Max"] = np.float32(scale[name][1])
        geo = "HDFEOS/SWATHS/PRS_L2D_HCO/Geolocation Fields"
        f.create_dataset(f"{geo}/Latitude", data=np.zeros(shape, dtype=np.float32))
        f.create_dataset(f"{geo}/Longitude", data=np.zeros(shape, dtype=np.float32))
        f.attrs["Epsg_Code"] = np.int32(32633)
        f.attrs["Projection_Name"] = np.bytes_("UTM")
        f.attrs["Processing_Level"] = np.bytes_("2D")
        # Centres of the corner pixels of TRANSFORM's grid.
        f.attrs["Product_ULcorner_easting"] = np.float32(500015.0)
        f.attrs["Product_ULcorner_northing"] = np.float32(4099985.0)
        f.attrs["Product_LRcorner_easting"] = np.float32(500015.0 + 30 * (shape[1] - 1))
        f.attrs["Product_LRcorner_northing"] = np.float32(4099985.0 - 30 * (shape[0] - 1))
    parts = []
    for name in ("Vnir", "Swir"):
        keep = np.flatnonzero(cw[name] > 0)
        low, high = scale[name]
        parts.append(
            (
                cw[name][keep],
                cubes[name][:, keep, :].transpose(1, 0, 2),
                np.full(keep.size, (np.float32(high) - np.float32(low)) / 65535.0),
                np.full(keep.size, low),
                flags[name][keep] == 0,
            )
        )
    centres = np.concatenate([p[0] for p in parts])
    order = np.argsort(centres, kind="stable")
    stored = np.concatenate([p[1] for p in parts])[order]
    gains = np.concatenate([p[2] for p in parts])[order]
    offsets = np.concatenate([p[3] for p in parts])[order]
    return FakeProduct(
        path=path,
        stored=stored,
        expected=_physical(stored, gains, offsets, mask),
        wavelengths=centres[order],
        fwhm=np.full(centres.size, 12.0),
        bad_bands=np.concatenate([p[4] for p in parts])[order],
        nodata=None,
        nodata_mask=mask,
    )


def fake_labels(shape: tuple[int, int] = SHAPE, classes: int = 3) -> np.ndarray:
    """(rows, cols) int labels: vertical stripes of classes 1..K, column 0 unlabelled."""
    cols = np.arange(shape[1])
    stripes = np.where(cols == 0, 0, 1 + (cols - 1) * classes // max(shape[1] - 1, 1))
    return np.broadcast_to(stripes, shape).astype(np.uint8).copy()


def write_label_raster(
    path: Path,
    labels: np.ndarray,
    *,
    transform: Affine | None = TRANSFORM,
    crs: CRS | None = CRS_UTM,
    nodata: int | None = 255,
) -> Path:
    """A one-band uint8 GeoTIFF of ``labels`` on the given grid."""
    profile = {
        "driver": "GTiff",
        "height": labels.shape[0],
        "width": labels.shape[1],
        "count": 1,
        "dtype": "uint8",
        "nodata": nodata,
    }
    if transform is not None:
        profile.update(transform=transform, crs=crs)
    with warnings.catch_warnings():
        # A swath's label raster (EMIT) has no grid on purpose.
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as ds:
            ds.write(labels.astype(np.uint8), 1)
    return path


def write_label_polygons(
    path: Path, boxes: list[tuple[tuple[int, int, int, int], Any]], *, wgs84: bool = False
) -> Path:
    """A GeoJSON FeatureCollection of rectangles ``((row0, col0, row1, col1), class)``, pixel
    bounds on TRANSFORM's grid (rows/cols ``[row0, row1)``), in UTM with a ``crs`` member or
    in WGS 84 longitude/latitude (no ``crs`` member, as RFC 7946 writes it)."""
    from rasterio.warp import transform_geom

    features = []
    for (row0, col0, row1, col1), value in boxes:
        x0, x1 = (TRANSFORM.c + c * TRANSFORM.a for c in (col0, col1))
        y0, y1 = (TRANSFORM.f + r * TRANSFORM.e for r in (row0, row1))
        ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
        geometry = {"type": "Polygon", "coordinates": [ring]}
        if wgs84:
            geometry = transform_geom(CRS_UTM, "EPSG:4326", geometry, precision=-1)
        features.append({"type": "Feature", "geometry": geometry, "properties": {"class": value}})
    collection: dict[str, Any] = {"type": "FeatureCollection", "features": features}
    if not wgs84:
        collection["crs"] = {"type": "name", "properties": {"name": "EPSG:32633"}}
    path.write_text(json.dumps(collection))
    return path


def main(out_dir: str) -> None:
    out = Path(out_dir)
    make_envi(out / "envi")
    make_geotiff(out / "geotiff")
    make_emit(out / "emit")
    make_enmap(out / "enmap")
    make_prisma(out / "prisma")


if __name__ == "__main__":
    main(sys.argv[1])
