"""The in-memory scene every dataset class produces, and the checks that make it trustworthy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["HyperspectralScene"]


class HyperspectralScene:
    """A loaded scene: one cube held in memory once, with optional per-pixel labels.

    Attributes:
        name: short identifier of the scene (e.g. ``"indian_pines"``).
        image: (H, W, C) float32 cube, C = number of bands, values as stored in the file.
        labels: (H, W) int64 raster, 0 = unlabelled, 1..K = classes; ``None`` for a scene that
            is only predicted on.
        class_names: K names, for labels 1..K.
        wavelengths: (C,) band centres in nm, or ``None`` when unknown (named scenes document
            whether theirs are exact or approximations).
        gsd: ground sampling distance in metres, or ``None`` when unknown.

    Args:
        image: (H, W, C) array of any real dtype; converted to float32.
        labels: (H, W) integer raster (or float holding whole numbers), or ``None``.
        class_names: names of classes 1..K. Without it, a labelled scene gets ``class_1`` ...
            ``class_K`` with K the largest label.
        wavelengths: (C,) band centres in nm.
        gsd: ground sampling distance in metres.
        name: scene identifier.
        image_source: where the cube came from (a path), quoted in error messages.
        label_source: where the labels came from, quoted in error messages.

    Raises:
        ValueError: the cube is not 3-D or holds NaN/inf, the labels do not match the cube's size,
            hold negative, fractional or out-of-range values, or the wavelengths do not match the
            band count.
    """

    def __init__(
        self,
        image: np.ndarray,
        labels: np.ndarray | None = None,
        class_names: Sequence[str] | None = None,
        wavelengths: Sequence[float] | np.ndarray | None = None,
        gsd: float | None = None,
        name: str = "scene",
        image_source: str | None = None,
        label_source: str | None = None,
    ) -> None:
        self.name = name
        self.image = _checked_image(image, image_source or f"the {name} cube")
        self.labels = (
            None
            if labels is None
            else _checked_labels(
                labels,
                self.image.shape[:2],
                class_names,
                label_source or f"the {name} labels",
                image_source or f"the {name} cube",
            )
        )
        if class_names is None:
            top = 0 if self.labels is None else int(self.labels.max(initial=0))
            class_names = [f"class_{k}" for k in range(1, top + 1)]
        self.class_names = list(class_names)
        self.wavelengths = _checked_wavelengths(wavelengths, self.num_bands, name)
        self.gsd = None if gsd is None else float(gsd)

    @property
    def num_classes(self) -> int:
        """K, the number of classes (labels 1..K)."""
        return len(self.class_names)

    @property
    def num_bands(self) -> int:
        """C, the number of spectral bands."""
        return int(self.image.shape[2])

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W), the spatial size."""
        return int(self.image.shape[0]), int(self.image.shape[1])

    @property
    def has_labels(self) -> bool:
        """Whether the scene can be trained or evaluated on (``False``: prediction only)."""
        return self.labels is not None

    def class_counts(self) -> np.ndarray:
        """Labelled pixels per class: an int64 array of length K, entry k-1 for class k."""
        if self.labels is None:
            raise ValueError(f"Scene {self.name!r} has no labels; it can only be predicted on.")
        return np.bincount(self.labels.ravel(), minlength=self.num_classes + 1)[1:]

    def __repr__(self) -> str:
        h, w = self.shape
        labelled = "unlabelled" if self.labels is None else f"{self.num_classes} classes"
        return f"{type(self).__name__}(name={self.name!r}, {h}x{w}x{self.num_bands}, {labelled})"


def _checked_image(image: np.ndarray, source: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(
            f"{source}: expected a cube of shape (H, W, bands), got shape {image.shape}. "
            "Pass a 3-D array (move the band axis last)."
        )
    if image.dtype.kind not in "biuf":
        raise ValueError(f"{source}: dtype {image.dtype} is not numeric; pass a numeric cube.")
    image = np.ascontiguousarray(image, dtype=np.float32)
    if not np.isfinite(image).all():
        bad = np.argwhere(~np.isfinite(image).all(axis=2))
        raise ValueError(
            f"{source}: {len(bad)} pixel(s) hold NaN or inf values (first at row, col "
            f"{tuple(int(v) for v in bad[0])}). Fill or mask them (e.g. numpy.nan_to_num or "
            "interpolation) and save the cube again."
        )
    return image


def _checked_labels(
    labels: np.ndarray,
    shape: tuple[int, int],
    class_names: Sequence[str] | None,
    source: str,
    image_source: str,
) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != tuple(shape):
        raise ValueError(
            f"{source} has shape {labels.shape} but {image_source} is {shape[0]}x{shape[1]} "
            "pixels. The label raster must cover the cube pixel for pixel: pass the labels that "
            "belong to this cube (or crop both to the same window)."
        )
    if labels.dtype.kind == "f":
        if not np.isfinite(labels).all() or (labels != np.round(labels)).any():
            raise ValueError(
                f"{source}: labels must be whole numbers (0 = unlabelled, 1..K = classes); "
                "found fractional, NaN or inf values. Save the labels as integers."
            )
    elif labels.dtype.kind not in "biu":
        raise ValueError(f"{source}: dtype {labels.dtype} is not numeric; pass integer labels.")
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    top = len(class_names) if class_names is not None else None
    bad = labels < 0 if top is None else (labels < 0) | (labels > top)
    if bad.any():
        values = sorted({int(v) for v in np.unique(labels[bad])})
        allowed = "0 or more" if top is None else f"0..{top} ({top} class names given)"
        raise ValueError(
            f"{source} holds label value(s) {values[:10]} outside {allowed}; 0 means unlabelled. "
            "Pass class_names for every class, or remap the labels to 0..K."
        )
    return labels


def _checked_wavelengths(
    wavelengths: Sequence[float] | np.ndarray | None, bands: int, name: str
) -> np.ndarray | None:
    if wavelengths is None:
        return None
    wavelengths = np.asarray(wavelengths, dtype=np.float64).reshape(-1)
    if wavelengths.shape != (bands,):
        raise ValueError(
            f"Scene {name!r}: {wavelengths.size} wavelengths given for a cube of {bands} bands. "
            "Pass one band centre (nm) per band, in band order."
        )
    return wavelengths
