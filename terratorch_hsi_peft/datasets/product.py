"""A scene from a sensor product on disk (ENVI, GeoTIFF, EMIT, EnMAP, PRISMA) that fits in memory.

The product's metadata drive what the plugin otherwise asks for by hand: the band centres (so
the ``sentinel2`` band route needs no wavelength list), the bad bands (dropped), the nodata pixels
(masked: never labelled, so never used to fit a band route or to train), and the map grid (labels
given as a raster must lie on it; labelled polygons are rasterised onto it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from terratorch_hsi_peft.datasets.base import HyperspectralScene
from terratorch_hsi_peft.products import ProductMetadata, open_product

__all__ = ["ProductScene", "rasterize_labels", "read_label_raster"]

#: vector label files read with ``json`` (no OGR needed); others go through pyogrio.
GEOJSON_SUFFIXES = (".geojson", ".json")
#: label files taken as vectors (anything else is opened as a raster).
VECTOR_SUFFIXES = (*GEOJSON_SUFFIXES, ".gpkg", ".shp", ".fgb", ".kml", ".gml", ".sqlite")


class ProductScene(HyperspectralScene):
    """A sensor product read whole into memory, with labels from a raster or polygons.

    Args:
        path: the product (an ENVI ``.hdr`` or binary, a GeoTIFF, an EMIT ``.nc``, an EnMAP
            folder, a PRISMA ``.he5``).
        labels: a label raster on the product's grid (``0`` / its nodata = unlabelled, 1..K =
            classes), or a vector file of labelled polygons (GeoJSON, or any OGR format with
            pyogrio installed) rasterised onto the product's grid; ``None`` for prediction only.
        format: the product format (``envi``, ``geotiff``, ``emit``, ``enmap``, ``prisma``);
            by default from the file layout.
        label_attribute: the polygons' property holding the class: integer codes 1..K, or class
            names (matched to ``class_names``, or numbered in sorted order without them).
        class_names: names of classes 1..K.
        drop_bad_bands: drop the bands the product marks bad (water vapour...); ``False`` keeps
            every band as stored.
        name: scene identifier; by default the product's file name without its extension
            (the folder name for EnMAP).

    Attributes:
        product_metadata: the product's :class:`~terratorch_hsi_peft.products.ProductMetadata`.
        band_indices: 0-based product bands kept in :attr:`image` (all but the bad ones).
        valid_mask: (H, W) bool, ``False`` at nodata pixels (any kept band without data). Their
            values in :attr:`image` are the per-band mean of the valid pixels (a neutral value
            after any band route); they carry label 0 and so are never trained or fitted on.
        crs, transform: the product's map grid (``None`` for an unprojected swath such as EMIT).

    Raises:
        FileNotFoundError: the product or the labels do not exist.
        ValueError: labels off the product's grid, polygons on a product without a grid, a
            missing ``label_attribute``, a product with no valid pixel.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        labels: str | os.PathLike | None = None,
        format: str | None = None,
        label_attribute: str = "class",
        class_names: Sequence[str] | None = None,
        drop_bad_bands: bool = True,
        name: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.label_path = None if labels is None else Path(labels)
        with open_product(self.path, format) as product:
            meta = product.metadata
            keep = meta.good_bands if drop_bad_bands else np.arange(meta.bands)
            cube = product.read(bands=keep)  # (C, H, W) float32, NaN at nodata
        self.product_metadata = meta
        self.band_indices = keep
        self.crs = meta.crs
        self.transform = meta.transform
        self.valid_mask = ~np.isnan(cube).any(axis=0)
        if not self.valid_mask.any():
            raise ValueError(
                f"{self.path}: every pixel is nodata (value {meta.nodata}); check the product "
                "or its `data ignore value` / nodata setting."
            )
        # Nodata pixels take the band means of the valid ones: neutral after z-scoring or PCA.
        # Band by band and in place: the cube is the big array, never copied whole.
        nodata = ~self.valid_mask
        if nodata.any():
            for band in cube:
                band[nodata] = band[self.valid_mask].mean(dtype=np.float64)
        label_raster = None
        if self.label_path is not None:
            if self.label_path.suffix.lower() in VECTOR_SUFFIXES:
                label_raster, names = rasterize_labels(
                    self.label_path, meta, label_attribute, class_names
                )
                class_names = class_names or names
            else:
                label_raster = read_label_raster(self.label_path, meta, self.path)
            label_raster = np.where(self.valid_mask, label_raster, 0)  # nodata: unlabelled
        wavelengths = None if meta.wavelengths is None else meta.wavelengths[keep]
        super().__init__(
            np.moveaxis(cube, 0, -1),
            label_raster,
            class_names=class_names,
            wavelengths=wavelengths,
            gsd=_gsd(meta),
            # The file's stem: map writers append suffixes, and "scene.hdr" would lose them.
            name=name or (self.path.name if self.path.is_dir() else self.path.stem),
            image_source=str(self.path),
            label_source=None if self.label_path is None else str(self.label_path),
        )


def _gsd(meta: ProductMetadata) -> float | None:
    """The pixel size in metres of a projected grid with square pixels, else ``None``."""
    if meta.transform is None or meta.crs is None or not meta.crs.is_projected:
        return None
    size = abs(meta.transform.a)
    return size if np.isclose(size, abs(meta.transform.e)) else None


def read_label_raster(path: Path, meta: ProductMetadata, product_path: Path) -> np.ndarray:
    """The (H, W) int64 labels of a raster on the product's grid (its nodata read as 0).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a size, transform or CRS different from the product's, or fractional labels.
    """
    import rasterio

    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: check the label raster's path.")
    with rasterio.open(path) as ds:
        size = (ds.height, ds.width)
        if size != (meta.height, meta.width):
            raise ValueError(
                f"Label raster {path} is {size[0]}x{size[1]} pixels but the product "
                f"{product_path} is {meta.height}x{meta.width}: write the labels on the "
                "product's grid (same size and transform), e.g. with gdalwarp -te/-tr, or give "
                "polygons (GeoJSON) to rasterise instead."
            )
        if meta.transform is not None and ds.crs is not None:
            if meta.crs is not None and ds.crs != meta.crs:
                raise ValueError(
                    f"Label raster {path} is in {ds.crs} but the product {product_path} is in "
                    f"{meta.crs}: reproject the labels onto the product's grid."
                )
            if not ds.transform.almost_equals(meta.transform, precision=1e-6):
                raise ValueError(
                    f"Label raster {path} has transform {tuple(ds.transform)[:6]} but the "
                    f"product {product_path} has {tuple(meta.transform)[:6]}: the labels are "
                    "shifted or resampled; write them on the product's grid."
                )
        values = ds.read(1, masked=True)
    labels = np.ma.filled(values.astype(np.float64), 0)
    if (labels != np.round(labels)).any():
        raise ValueError(f"Label raster {path} holds fractional values; save integer classes.")
    return labels.astype(np.int64)


def _read_features(path: Path) -> tuple[list[Any], list[dict[str, Any]], Any]:
    """(geometries, properties, CRS or None) of a vector file."""
    if path.suffix.lower() in GEOJSON_SUFFIXES:
        data = json.loads(path.read_text())
        features = data.get("features", [data] if data.get("type") == "Feature" else [])
        crs = None
        name = (data.get("crs") or {}).get("properties", {}).get("name")
        if name:
            crs = name
        return (
            [f["geometry"] for f in features],
            [f.get("properties") or {} for f in features],
            crs or "EPSG:4326",  # RFC 7946: GeoJSON without a crs member is WGS 84
        )
    try:
        import pyogrio.raw
        import shapely
    except ImportError as err:
        raise ValueError(
            f"{path}: reading {path.suffix} polygons needs pyogrio (pip install pyogrio); or "
            "convert them to GeoJSON (ogr2ogr -f GeoJSON labels.geojson "
            f"{path.name})."
        ) from err
    meta, _, geometry, fields = pyogrio.raw.read(path)
    geometries = list(shapely.from_wkb(geometry))
    names = list(meta["fields"])
    properties = [
        {key: column[i] for key, column in zip(names, fields, strict=True)}
        for i in range(len(geometries))
    ]
    return geometries, properties, meta.get("crs")


def rasterize_labels(
    path: Path,
    meta: ProductMetadata,
    label_attribute: str = "class",
    class_names: Sequence[str] | None = None,
) -> tuple[np.ndarray, list[str] | None]:
    """Burn labelled polygons into an (H, W) int64 raster on the product's grid.

    A pixel takes the class of the polygon covering its centre (``rasterio.features.rasterize``;
    where polygons overlap, the later one wins); pixels outside every polygon are 0.

    Returns:
        (labels, class names): names when the attribute held names, else ``None``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a product without a map grid, a feature without ``label_attribute``, class
            codes below 1, or a class name not in ``class_names``.
    """
    from rasterio.crs import CRS
    from rasterio.features import rasterize
    from rasterio.warp import transform_geom

    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: check the label polygons' path.")
    if meta.transform is None:
        raise ValueError(
            f"Label polygons {path} cannot be placed on a product without a map grid (an "
            "unprojected swath such as EMIT L2A): give a label raster of the swath's size."
        )
    geometries, properties, crs = _read_features(path)
    missing = [i for i, p in enumerate(properties) if p.get(label_attribute) is None]
    if missing:
        raise ValueError(
            f"{path}: {len(missing)} feature(s) (first #{missing[0]}) have no "
            f"{label_attribute!r} property; set label_attribute to the property holding the "
            "class (a code 1..K or a class name)."
        )
    values = [p[label_attribute] for p in properties]
    names = None
    if all(isinstance(v, str) for v in values):
        names = list(class_names) if class_names is not None else sorted(set(values))
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(
                f"{path}: class name(s) {unknown} are not in class_names {names}; add them."
            )
        codes = [names.index(v) + 1 for v in values]
        names = None if class_names is not None else names
    else:
        codes = [int(v) for v in values]
        if min(codes, default=1) < 1:
            raise ValueError(
                f"{path}: {label_attribute!r} holds code {min(codes)}; classes are 1..K "
                "(0 is unlabelled: leave such areas out of the polygons)."
            )
    if crs is not None and meta.crs is not None and CRS.from_user_input(crs) != meta.crs:
        geometries = [transform_geom(crs, meta.crs, g) for g in geometries]
    if not geometries:
        return np.zeros((meta.height, meta.width), dtype=np.int64), names
    burnt = rasterize(
        zip(geometries, codes, strict=True),
        out_shape=(meta.height, meta.width),
        transform=meta.transform,
        fill=0,
        dtype="int32",
    )
    if not burnt.any():
        raise ValueError(
            f"{path}: none of its {len(geometries)} polygon(s) covers a pixel centre of the "
            f"product ({meta.crs}); check the polygons' CRS (GeoJSON without a `crs` member is "
            "WGS 84 longitude/latitude) and that they lie on the scene."
        )
    return burnt.astype(np.int64), names
