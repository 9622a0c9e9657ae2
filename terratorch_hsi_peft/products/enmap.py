"""EnMAP L2A surface reflectance (DLR): a GeoTIFF cube with band facts in METADATA.XML.

Sensor: EnMAP (Environmental Mapping and Analysis Program, DLR/GFZ), VNIR + SWIR, 224 bands
(418-2445 nm; the 2020 qualification product has 218), 30 m pixels, ~30 x 30 km tiles.

Layout: a folder ``ENMAP01-____L2A-DT<id>_<start>Z_<tile>_V<ver>_<prod>Z`` holding files
``<stem>-SPECTRAL_IMAGE.TIF`` (int16 cube, bands in ascending wavelength, VNIR and SWIR
interleaved in their ~900-1000 nm overlap), ``<stem>-METADATA.XML``, and quality layers
(``QL_PIXELMASK.TIF``, ``QL_QUALITY_*.TIF``...). The reader takes the folder, or the
SPECTRAL_IMAGE file with the XML beside it.

From ``METADATA.XML`` (root ``level_X``): per band
``specific/bandCharacterisation/bandID[@number]/{wavelengthCenterOfBand, FWHMOfBand, GainOfBand,
OffsetOfBand}`` (nm; reflectance = DN * gain + offset, gain 1e-4 in the examples). From the TIFF:
CRS (UTM/WGS84 in the examples), transform, nodata (-32768 when the TIFF declares none: the value
GFZ's EnPT and ESA SNAP use). The metadata marks no bad bands, so none are marked here (the
deep water-vapour bands are present in L2A; drop them with a band route or ``bands``).

Unconfirmed: the DLR L2A format specification itself (int16 / -32768 come from EnPT and SNAP);
projections other than UTM. Sources: EnMAP-Box/enmap-box
``enmapboxprocessing/algorithm/importenmapl2aalgorithm.py``; senbox-org/optical-toolbox
``opttbx-enmap-reader`` (``EnmapL2AMetadata.java``, the qualification METADATA.XML); GFZ/enpt;
opengeos/HyperCoast ``hypercoast/enmap.py``; ``/work/shared/notes/sensor-products.md`` section 3.
"""

from __future__ import annotations

import dataclasses
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from terratorch_hsi_peft.products.rasterio_product import RasterioProduct

__all__ = ["EnmapProduct", "enmap_files"]

#: EnMAP L2A's int16 nodata value when the TIFF declares none (EnPT, SNAP).
ENMAP_NODATA = -32768.0
_IMAGE_SUFFIXES = (".tif", ".tiff")


def enmap_files(path: Path) -> tuple[Path, Path]:
    """(SPECTRAL_IMAGE, METADATA.XML) of the EnMAP product at ``path`` (folder or image file).

    Raises:
        FileNotFoundError: either file missing, naming what was looked for.
    """
    folder = path if path.is_dir() else path.parent
    if path.is_dir():
        images = sorted(
            p
            for p in folder.iterdir()
            if "SPECTRAL_IMAGE" in p.name.upper() and p.suffix.lower() in _IMAGE_SUFFIXES
        )
        if not images:
            raise FileNotFoundError(
                f"{folder}: no *SPECTRAL_IMAGE*.TIF in this EnMAP folder; give the L2A folder "
                "as delivered (GeoTIFF format), or the image file itself."
            )
        image = images[0]
    else:
        image = path
    xmls = sorted(p for p in folder.iterdir() if p.name.upper().endswith("METADATA.XML"))
    if not xmls:
        raise FileNotFoundError(
            f"{folder}: no *METADATA.XML beside the EnMAP image; the band centres, widths and "
            "gains are read from it: keep the XML in the product folder."
        )
    return image, xmls[0]


def _band_table(xml: Path, bands: int) -> dict[str, np.ndarray]:
    """Per-band centre, FWHM, gain and offset from ``bandCharacterisation``, in band order."""
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError as err:
        raise ValueError(
            f"{xml}: METADATA.XML is not valid XML ({err}); replace it with the product's own."
        ) from err
    entries = root.findall(".//bandCharacterisation/bandID")
    if len(entries) != bands:
        raise ValueError(
            f"{xml}: bandCharacterisation lists {len(entries)} bands but the image has {bands}; "
            "the XML and the image come from different products."
        )
    entries.sort(key=lambda e: int(e.get("number", 0)))
    fields = {
        "wavelengths": "wavelengthCenterOfBand",
        "fwhm": "FWHMOfBand",
        "scale": "GainOfBand",
        "offset": "OffsetOfBand",
    }
    table: dict[str, np.ndarray] = {}
    for key, tag in fields.items():
        texts = [e.findtext(tag) for e in entries]
        if any(t is None for t in texts):
            if key in ("scale", "offset"):
                continue  # no gains: the image holds physical values
            raise ValueError(f"{xml}: a bandID has no <{tag}>; the XML is incomplete.")
        table[key] = np.array([float(t) for t in texts], dtype=np.float64)
    return table


class EnmapProduct(RasterioProduct):
    """An EnMAP L2A product: the folder (or its SPECTRAL_IMAGE file) with METADATA.XML."""

    format_name = "enmap"

    def __init__(self, path: str | os.PathLike) -> None:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: check the product path.")
        image, xml = enmap_files(path)
        super().__init__(path, dataset_path=image)
        try:
            table = _band_table(xml, self.metadata.bands)
        except Exception:
            self.close()
            raise
        m = self.metadata
        nodata = m.nodata
        if nodata is None and np.dtype(m.extra["dtype"]) == np.int16:
            nodata = ENMAP_NODATA
        self.metadata = dataclasses.replace(
            m,
            wavelengths=table["wavelengths"],
            fwhm=table["fwhm"],
            nodata=nodata,
            scale=table.get("scale", m.scale),
            offset=table.get("offset", m.offset),
            extra={**m.extra, "image": image, "metadata_xml": xml},
        )
