"""The contract every sensor-product reader meets: a lazily read cube with its metadata.

A reader opens a product (a file or a folder) and reads nothing but its metadata; pixels are read
window by window (:meth:`SensorProduct.read`), so a flight line larger than memory can be mapped
block by block. Values come back as physical values (reflectance after the product's gain and
offset), float32, bands first, nodata pixels as NaN: the same for every format.
"""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ProductMetadata", "SensorProduct", "Window"]


@dataclass(frozen=True)
class Window:
    """A block of rows and columns, ``[row, row + height) x [col, col + width)``, 0-based."""

    row: int
    col: int
    height: int
    width: int

    def slices(self) -> tuple[slice, slice]:
        """The (rows, cols) slices of this window."""
        return slice(self.row, self.row + self.height), slice(self.col, self.col + self.width)


@dataclass(frozen=True)
class ProductMetadata:
    """What a product says about its cube, in the order of its bands as stored.

    Attributes:
        bands, height, width: the cube's size (bands as stored, bad bands included).
        wavelengths: (bands,) band centres in nm, or ``None`` when the product has none.
        fwhm: (bands,) full widths at half maximum in nm, or ``None``.
        bad_bands: (bands,) bool, ``True`` for a band the product marks bad (water vapour,
            detector overlap dropped by the provider...); all ``False`` when it marks none.
        nodata: the stored value that marks a pixel without data, or ``None``.
        crs: the coordinate reference system (``rasterio.crs.CRS``) or ``None`` (a swath).
        transform: the affine pixel-to-map transform (``affine.Affine``) or ``None``.
        scale, offset: physical value = stored value * scale + offset (per band or scalar).
        extra: format-specific facts worth keeping (e.g. EMIT's geometry lookup table path).
    """

    bands: int
    height: int
    width: int
    wavelengths: np.ndarray | None = None
    fwhm: np.ndarray | None = None
    bad_bands: np.ndarray | None = None
    nodata: float | None = None
    crs: Any = None
    transform: Any = None
    scale: np.ndarray | float = 1.0
    offset: np.ndarray | float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def good_bands(self) -> np.ndarray:
        """0-based indices of the bands not marked bad."""
        if self.bad_bands is None:
            return np.arange(self.bands)
        return np.flatnonzero(~np.asarray(self.bad_bands, dtype=bool))


class SensorProduct(abc.ABC):
    """A hyperspectral product on disk, opened lazily (use as a context manager, or ``close()``).

    Subclasses set ``self.path`` and ``self.metadata`` in ``__init__`` (reading metadata only)
    and implement :meth:`_read_stored`.
    """

    #: the format's short name (``"envi"``, ``"emit"``...), as used in configs.
    format_name: str = ""
    path: Path
    metadata: ProductMetadata

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path} does not exist: check the product path.")

    @property
    def shape(self) -> tuple[int, int, int]:
        """(bands, height, width) as stored, bad bands included."""
        m = self.metadata
        return m.bands, m.height, m.width

    def read(self, window: Window | None = None, bands: np.ndarray | None = None) -> np.ndarray:
        """Physical values of ``bands`` (default: all) over ``window`` (default: everything).

        Returns:
            (len(bands), h, w) float32; pixels equal to the product's nodata value are NaN.
        """
        m = self.metadata
        window = window or Window(0, 0, m.height, m.width)
        if (
            window.row < 0
            or window.col < 0
            or window.height <= 0
            or window.width <= 0
            or window.row + window.height > m.height
            or window.col + window.width > m.width
        ):
            raise ValueError(
                f"{self.path}: window {window} is outside the {m.height}x{m.width} product."
            )
        index = np.arange(m.bands) if bands is None else np.asarray(bands, dtype=np.int64)
        stored = self._read_stored(window, index)
        values = stored.astype(np.float32, copy=False)
        if m.nodata is not None and _representable(m.nodata, stored.dtype):
            nodata = stored == np.asarray(m.nodata).astype(stored.dtype)
            values = np.where(nodata, np.float32(np.nan), values)
        scale = np.broadcast_to(np.asarray(m.scale, dtype=np.float32), (m.bands,))[index]
        offset = np.broadcast_to(np.asarray(m.offset, dtype=np.float32), (m.bands,))[index]
        if (scale != 1).any() or (offset != 0).any():
            values = values * scale[:, None, None] + offset[:, None, None]
        return np.ascontiguousarray(values, dtype=np.float32)

    @abc.abstractmethod
    def _read_stored(self, window: Window, bands: np.ndarray) -> np.ndarray:
        """The stored values (dtype as on disk) of 0-based ``bands`` over ``window``, (b, h, w)."""

    def close(self) -> None:  # noqa: B027 (readers without open handles need nothing)
        """Release open file handles."""

    def __enter__(self) -> SensorProduct:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        b, h, w = self.shape
        return f"{type(self).__name__}({str(self.path)!r}, {h}x{w}x{b})"


def _representable(value: float, dtype: np.dtype) -> bool:
    """Whether ``value`` is a value of ``dtype``: a -9999 nodata on uint8 data marks no pixel
    (cast, it would wrap to 241 and mask real values)."""
    if np.issubdtype(dtype, np.floating):
        return True
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return float(value).is_integer() and info.min <= value <= info.max
    return False
