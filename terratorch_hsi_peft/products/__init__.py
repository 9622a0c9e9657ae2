"""Hyperspectral sensor products on disk (ENVI, GeoTIFF, EMIT, EnMAP, PRISMA), read lazily."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from terratorch_hsi_peft.products.base import ProductMetadata, SensorProduct, Window

__all__ = ["PRODUCT_FORMATS", "ProductMetadata", "SensorProduct", "Window", "open_product"]

#: format name -> "module:class" of its reader (imported on use: h5py readers stay unloaded).
PRODUCT_FORMATS: dict[str, str] = {
    "envi": "terratorch_hsi_peft.products.rasterio_product:EnviProduct",
    "geotiff": "terratorch_hsi_peft.products.rasterio_product:GeoTiffProduct",
    "emit": "terratorch_hsi_peft.products.emit:EmitProduct",
    "enmap": "terratorch_hsi_peft.products.enmap:EnmapProduct",
    "prisma": "terratorch_hsi_peft.products.prisma:PrismaProduct",
}

_TIFF_SUFFIXES = (".tif", ".tiff")


def _reader(format_name: str) -> type[SensorProduct]:
    module, _, name = PRODUCT_FORMATS[format_name].partition(":")
    return getattr(importlib.import_module(module), name)


def detect_format(path: Path) -> str:
    """The format name of the product at ``path``, from its file layout.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a layout no reader knows, naming the formats and the ``format`` argument.
    """
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: check the product path.")
    suffix = path.suffix.lower()
    if path.is_dir():
        if "enmap" in PRODUCT_FORMATS and any(path.glob("*SPECTRAL_IMAGE*")):
            return "enmap"
    elif (
        suffix == ".hdr"
        or path.with_name(path.name + ".hdr").is_file()
        or (path.with_suffix(".hdr").is_file() and suffix not in _TIFF_SUFFIXES)
    ):
        return "envi"
    elif suffix in _TIFF_SUFFIXES:
        return "geotiff"
    elif suffix == ".nc" and "emit" in PRODUCT_FORMATS:
        return "emit"
    elif suffix in (".he5", ".h5") and "prisma" in PRODUCT_FORMATS:
        return "prisma"
    raise ValueError(
        f"{path}: cannot tell the product format from its layout; pass format= one of "
        f"{sorted(PRODUCT_FORMATS)} (ENVI: the .hdr or its binary; GeoTIFF: .tif; EMIT: .nc; "
        "EnMAP: the folder with SPECTRAL_IMAGE.TIF and METADATA.XML; PRISMA: .he5)."
    )


def open_product(path: str | os.PathLike, format: str | None = None) -> SensorProduct:
    """Open the product at ``path`` with the reader of ``format`` (``None``: from its layout).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: an unknown ``format`` name, or a layout no reader recognises.
    """
    path = Path(path)
    if format is None:
        format = detect_format(path)
    key = format.lower()
    if key not in PRODUCT_FORMATS:
        raise ValueError(
            f"Unknown product format {format!r} for {path}; use one of {sorted(PRODUCT_FORMATS)}."
        )
    return _reader(key)(path)
