"""Train / validation / test splits of a labelled scene that are seeded, saved, and do not leak.

A split holds flat pixel indices into the (H, W) label raster (row-major, int64, sorted). Only
labelled pixels (label > 0) ever appear in it; the three sets are disjoint; validation is always
carved from the training side, never from test. Two protocols:

- ``per_class``: the literature's protocol, a fraction or a count of each class's pixels drawn at
  random for training, the rest for test. Neighbouring train and test pixels share patch windows,
  so accuracies under this protocol are optimistic; it is there for comparison with published
  numbers.
- ``spatially_disjoint``: the scene is cut into square blocks; whole blocks go to test, the others
  to the training side, chosen so that each class appears on both sides where the scene allows.
  Training-side pixels closer than ``patch_size // 2`` (Chebyshev distance) to a test block are
  dropped, so no ``patch_size x patch_size`` window centred on a training or validation pixel
  contains a test pixel. Validation blocks are chosen among the training blocks the same way, with
  the same buffer between them and the training pixels.
"""

from __future__ import annotations

import inspect
import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import maximum_filter

from terratorch_hsi_peft.utils.download import atomic_write

__all__ = ["PROTOCOLS", "Split", "make_split", "per_class_split", "spatially_disjoint_split"]


@dataclass
class Split:
    """Flat pixel indices (row-major into an (H, W) raster, int64, sorted) of each set.

    Attributes:
        train: pixels trained on.
        val: validation pixels (carved from the training side; may be empty).
        test: test pixels.
        protocol: ``"per_class"`` or ``"spatially_disjoint"``.
        seed: seed of the random generator that drew it.
        params: every other argument needed to recreate it (and facts about the result, such as
            classes that could not be placed on both sides).
        shape: (H, W) of the label raster it indexes.
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    protocol: str
    seed: int
    params: dict[str, Any] = field(default_factory=dict)
    shape: tuple[int, int] | None = None

    def save(self, path: str | os.PathLike) -> None:
        """Write the split to ``path`` (``.npz`` or ``.json``) atomically.

        Raises:
            ValueError: the suffix is neither ``.npz`` nor ``.json``.
        """
        path = Path(path)
        meta = {
            "protocol": self.protocol,
            "seed": int(self.seed),
            "params": self.params,
            "shape": None if self.shape is None else [int(v) for v in self.shape],
        }
        arrays = {name: np.asarray(getattr(self, name), dtype=np.int64) for name in _SETS}
        suffix = path.suffix.lower()
        if suffix == ".json":
            payload = {**meta, **{name: a.tolist() for name, a in arrays.items()}}
            with atomic_write(path, "w") as f:
                json.dump(payload, f)
        elif suffix == ".npz":
            with atomic_write(path) as f:
                np.savez_compressed(f, meta=np.array(json.dumps(meta)), **arrays)
        else:
            raise ValueError(f"{path}: save a split as .npz or .json, not {suffix!r}.")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Split:
        """Read a split written by :meth:`save`.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            ValueError: the file is not a split saved by :meth:`save` (or is damaged).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Split file {path} does not exist; create it with Split.save.")
        try:
            if path.suffix.lower() == ".json":
                payload = json.loads(path.read_text())
                meta = payload
                arrays = {name: payload[name] for name in _SETS}
            else:
                with np.load(path, allow_pickle=False) as data:
                    meta = json.loads(str(data["meta"]))
                    arrays = {name: data[name] for name in _SETS}
            shape = meta.get("shape")
            return cls(
                **{name: np.asarray(a, dtype=np.int64) for name, a in arrays.items()},
                protocol=meta["protocol"],
                seed=int(meta["seed"]),
                params=meta["params"],
                shape=None if shape is None else (int(shape[0]), int(shape[1])),
            )
        except (KeyError, ValueError, TypeError, OSError) as err:
            raise ValueError(
                f"{path} is not a readable split ({type(err).__name__}: {err}); recreate it with "
                "make_split(...).save(path)."
            ) from err

    def validate(self, labels: np.ndarray) -> None:
        """Check that the split fits ``labels``: same shape, only labelled pixels, disjoint sets.

        Raises:
            ValueError: naming what does not fit; recreate the split for this scene.
        """
        labels = np.asarray(labels)
        fix = "Recreate the split from this scene's labels (make_split)."
        if self.shape is not None and tuple(self.shape) != labels.shape:
            raise ValueError(
                f"Split made for a {self.shape} raster, labels are {labels.shape}. {fix}"
            )
        flat = labels.reshape(-1)
        for name in _SETS:
            idx = getattr(self, name)
            if idx.size and (idx.min() < 0 or idx.max() >= flat.size):
                raise ValueError(f"Split {name} indices fall outside the raster. {fix}")
            if (flat[idx] <= 0).any():
                raise ValueError(f"Split {name} holds unlabelled pixels. {fix}")
        sizes = sum(getattr(self, name).size for name in _SETS)
        if np.unique(np.concatenate([getattr(self, n) for n in _SETS])).size != sizes:
            raise ValueError(f"Split sets overlap or repeat pixels. {fix}")


_SETS = ("train", "val", "test")


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype.kind not in "biu":
        raise ValueError(
            f"labels must be an integer (H, W) raster (0 = unlabelled), got {labels.dtype} "
            f"{labels.shape}; pass scene.labels."
        )
    if not (labels > 0).any():
        raise ValueError("labels hold no labelled pixel (all 0); a split needs labelled pixels.")
    return labels.astype(np.int64, copy=False)


def _is_count(value: object) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _check_size(name: str, value: object, allow_zero: bool) -> None:
    if _is_count(value):
        if value < 0 or (value == 0 and not allow_zero):
            raise ValueError(f"{name}={value}: a count must be {'>= 0' if allow_zero else '>= 1'}.")
    elif isinstance(value, Real) and not isinstance(value, bool):
        low_ok = value >= 0 if allow_zero else value > 0
        if not (low_ok and value < 1):
            raise ValueError(
                f"{name}={value}: a fraction must lie in {'[0, 1)' if allow_zero else '(0, 1)'}; "
                "pass an int for a count of pixels."
            )
    else:
        raise TypeError(f"{name} must be a fraction (float) or a count (int), got {value!r}.")


def _check_fraction(name: str, value: float) -> None:
    if not isinstance(value, Real) or isinstance(value, bool) or not 0 <= value < 1:
        raise ValueError(f"{name}={value!r}: pass a fraction in [0, 1).")


def per_class_split(
    labels: np.ndarray,
    train_size: float | int = 0.1,
    val_size: float | int = 0.0,
    min_train_per_class: int = 5,
    seed: int = 0,
) -> Split:
    """Draw each class's training pixels at random; the rest of the class is test.

    Per class with n labelled pixels:

    - training pixels: ``round(train_size * n)`` for a fraction, ``train_size`` for a count;
      raised to ``min(min_train_per_class, n // 2)`` and to at least one; capped at ``n // 2``
      when a count asks for more than half the class (the usual convention for small classes,
      e.g. Indian Pines' 20 Oats pixels), and at ``n - 1`` for a fraction, so every class with
      two or more pixels is on both sides, as the literature's protocol expects;
    - validation pixels, taken out of those training pixels: ``round(val_size * n_train)`` for a
      fraction, ``val_size`` for a count, always leaving at least one training pixel.

    A class with a single labelled pixel cannot be on both sides: the pixel stays in test (the
    model cannot learn the class, and its test accuracy counts as such), the class is listed in
    ``params["classes_missing"]["train"]`` and a warning names it with its count.

    Args:
        labels: (H, W) integer raster, 0 = unlabelled, 1..K = classes.
        train_size: fraction in (0, 1) of each class, or count (int >= 1) per class.
        val_size: fraction in [0, 1) of each class's training pixels, or count (int >= 0) per class.
        min_train_per_class: lower bound on training pixels per class (never above half the class).
        seed: seed of the random draw.

    Returns:
        The split, with ``protocol="per_class"``.
    """
    labels = _check_labels(labels)
    _check_size("train_size", train_size, allow_zero=False)
    _check_size("val_size", val_size, allow_zero=True)
    if not _is_count(min_train_per_class) or min_train_per_class < 0:
        raise ValueError(f"min_train_per_class={min_train_per_class!r}: pass an int >= 0.")
    rng = np.random.default_rng(seed)
    flat = labels.reshape(-1)
    sets: dict[str, list[np.ndarray]] = {name: [] for name in _SETS}
    single: dict[int, int] = {}
    for cls in np.unique(flat[flat > 0]):
        pixels = rng.permutation(np.flatnonzero(flat == cls))
        n = pixels.size
        if _is_count(train_size):
            n_train = min(int(train_size), n // 2)
        else:
            n_train = min(round(train_size * n), n - 1)
        # A class without a training pixel cannot be learned: one is kept whenever n >= 2.
        n_train = max(n_train, min(max(min_train_per_class, 1), n // 2))
        if n_train == 0:
            single[int(cls)] = n
        if _is_count(val_size):
            n_val = min(int(val_size), max(n_train - 1, 0))
        else:
            n_val = min(round(val_size * n_train), max(n_train - 1, 0))
        sets["val"].append(pixels[:n_val])
        sets["train"].append(pixels[n_val:n_train])
        sets["test"].append(pixels[n_train:])
    if single:
        listing = ", ".join(f"class {c} ({n} labelled pixel)" for c, n in single.items())
        warnings.warn(
            f"Per-class split: {listing} has too few pixels for both a training and a test "
            "pixel; it gets no training pixel (it stays in test), so the model cannot learn it. "
            "Label more pixels of the class, or relabel them 0 (unlabelled) to leave it out.",
            UserWarning,
            stacklevel=2,
        )
    return Split(
        **{name: np.sort(np.concatenate(parts)).astype(np.int64) for name, parts in sets.items()},
        protocol="per_class",
        seed=int(seed),
        params={
            "train_size": train_size,
            "val_size": val_size,
            "min_train_per_class": int(min_train_per_class),
            "classes_missing": {"train": sorted(single), "test": []},
        },
        shape=labels.shape,
    )


def spatially_disjoint_split(
    labels: np.ndarray,
    block_size: int = 16,
    test_fraction: float = 0.5,
    patch_size: int = 1,
    val_fraction: float = 0.0,
    seed: int = 0,
    search_trials: int = 64,
) -> Split:
    """Assign whole square blocks to test or to the training side, with a buffer against leaks.

    The raster is cut into ``block_size x block_size`` blocks (smaller at the right and bottom
    edges). A seeded random greedy search, repeated ``search_trials`` times, picks test blocks so
    that each class's share of test pixels is close to ``test_fraction``; the best trial is the one
    with the fewest classes missing from either side (after the buffer), then the closest shares.
    Pixels on the training side within ``patch_size // 2`` pixels (Chebyshev distance) of any test
    block are dropped, so a ``patch_size x patch_size`` window centred on a training or validation
    pixel never contains a test-block pixel. Validation blocks (a ``val_fraction`` share of the
    training side) are chosen among the training blocks the same way, and training pixels within
    ``patch_size // 2`` of a validation block are dropped too.

    A class found in a single block cannot be on both sides; such classes (and any the search
    could not place) are listed in ``params["classes_missing"]`` and reported in a warning.

    Args:
        labels: (H, W) integer raster, 0 = unlabelled, 1..K = classes.
        block_size: side of the square blocks, in pixels (>= 1). Larger blocks leak less through
            spatial autocorrelation but make balanced assignments harder.
        test_fraction: target share of each class's labelled pixels in test, in (0, 1).
        patch_size: side of the square windows the model will see around each pixel (>= 1); sets
            the buffer to ``patch_size // 2``.
        val_fraction: target share of the training side's labelled pixels moved to validation,
            in [0, 1).
        seed: seed of the search.
        search_trials: random greedy trials; more can balance the classes better.

    Returns:
        The split, with ``protocol="spatially_disjoint"``.
    """
    labels = _check_labels(labels)
    for name, value in (("block_size", block_size), ("patch_size", patch_size)):
        if not _is_count(value) or value < 1:
            raise ValueError(f"{name}={value!r}: pass an int >= 1.")
    if not _is_count(search_trials) or search_trials < 1:
        raise ValueError(f"search_trials={search_trials!r}: pass an int >= 1.")
    _check_fraction("test_fraction", test_fraction)
    if test_fraction == 0:
        raise ValueError("test_fraction=0: pass a fraction in (0, 1).")
    _check_fraction("val_fraction", val_fraction)

    rng = np.random.default_rng(seed)
    radius = patch_size // 2
    blocks = _block_ids(labels.shape, block_size)
    labelled = labels > 0
    n_blocks = int(blocks.max()) + 1

    test_blocks = _choose_blocks(
        labels, block_size, radius, np.ones(n_blocks, bool), test_fraction, rng, search_trials
    )
    test_mask = labelled & test_blocks[blocks]
    train_side = labelled & ~_dilate(test_blocks[blocks], radius)
    val_mask = np.zeros_like(labelled)
    train_mask = train_side
    if val_fraction > 0:
        train_labels = np.where(train_side, labels, 0)
        val_blocks = _choose_blocks(
            train_labels, block_size, radius, ~test_blocks, val_fraction, rng, search_trials
        )
        val_mask = train_side & val_blocks[blocks]
        train_mask = train_side & ~_dilate(val_blocks[blocks], radius)

    present = np.unique(labels[labelled])
    missing = {
        name: sorted(set(present.tolist()) - set(np.unique(labels[mask]).tolist()))
        for name, mask in (("train", train_mask), ("test", test_mask))
    }
    if val_fraction > 0:
        missing["val"] = sorted(set(present.tolist()) - set(np.unique(labels[val_mask]).tolist()))
    if any(missing.values()):
        warnings.warn(
            f"Spatially disjoint split (block_size={block_size}, patch_size={patch_size}): classes "
            f"missing per set {missing}. Smaller blocks or patches let more classes be placed on "
            "every side.",
            stacklevel=2,
        )
    return Split(
        train=np.flatnonzero(train_mask).astype(np.int64),
        val=np.flatnonzero(val_mask).astype(np.int64),
        test=np.flatnonzero(test_mask).astype(np.int64),
        protocol="spatially_disjoint",
        seed=int(seed),
        params={
            "block_size": int(block_size),
            "test_fraction": float(test_fraction),
            "patch_size": int(patch_size),
            "val_fraction": float(val_fraction),
            "search_trials": int(search_trials),
            "buffer": int(radius),
            "classes_missing": missing,
        },
        shape=labels.shape,
    )


def _block_ids(shape: tuple[int, int], block_size: int) -> np.ndarray:
    """(H, W) raster of block numbers, row-major over the block grid."""
    rows = np.arange(shape[0]) // block_size
    cols = np.arange(shape[1]) // block_size
    return rows[:, None] * (cols.max() + 1) + cols[None, :]


def _dilate(region: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within Chebyshev distance ``radius`` of ``region``."""
    if radius == 0:
        return region
    return maximum_filter(region, size=2 * radius + 1, mode="constant", cval=False)


def _choose_blocks(
    labels: np.ndarray,
    block_size: int,
    radius: int,
    allowed: np.ndarray,
    fraction: float,
    rng: np.random.Generator,
    trials: int,
) -> np.ndarray:
    """Pick blocks among ``allowed`` holding about ``fraction`` of each class's labelled pixels.

    Labelled pixels (``labels > 0``) are either picked (in a chosen block), lost (within
    ``radius`` of a chosen block: the buffer) or left for the other side. The error is
    ``sum_c ((picked_c - f n_c)^2 + (left_c - (1 - f) n_c)^2) / n_c^2``, so a block whose buffer
    costs more than it brings is refused and compact picks win. Each trial visits the candidate
    blocks in a random order and keeps a block when it lowers the error; the best trial has the
    fewest classes absent from either side, then the smallest error.

    Returns:
        A boolean mask over block numbers (see :func:`_block_ids`).
    """
    height, width = labels.shape
    n_classes = int(labels.max())
    block_rows = -(-height // block_size)
    block_cols = -(-width // block_size)
    totals = np.bincount(labels.ravel(), minlength=n_classes + 1)[1:].astype(np.float64)
    present = totals > 0
    weights = np.where(present, 1.0 / np.maximum(totals, 1.0), 0.0) ** 2
    block_counts = np.bincount(
        _block_ids(labels.shape, block_size).ravel(), weights=(labels > 0).ravel()
    )
    candidates = np.flatnonzero(allowed & (block_counts > 0))

    def error(picked: np.ndarray, lost: np.ndarray) -> float:
        left = totals - picked - lost
        return float(
            (
                weights
                * ((picked - fraction * totals) ** 2 + (left - (1 - fraction) * totals) ** 2)
            ).sum()
        )

    def count(values: np.ndarray) -> np.ndarray:
        return np.bincount(values, minlength=n_classes + 1)[1:]

    best, best_key = np.zeros(block_rows * block_cols, dtype=bool), None
    for _ in range(trials):
        chosen = np.zeros(block_rows * block_cols, dtype=bool)
        state = np.where(labels > 0, _LEFT, _IGNORED)  # per pixel: left, picked, lost or ignored
        picked = np.zeros(n_classes)
        lost = np.zeros(n_classes)
        current = error(picked, lost)
        for block in rng.permutation(candidates):
            row, col = divmod(int(block), block_cols)
            r0, c0 = row * block_size, col * block_size
            r1, c1 = min(r0 + block_size, height), min(c0 + block_size, width)
            window = np.s_[max(r0 - radius, 0) : r1 + radius, max(c0 - radius, 0) : c1 + radius]
            sub_state, sub_labels = state[window], labels[window]
            inside = np.zeros(sub_state.shape, dtype=bool)
            inside[
                r0 - window[0].start : r1 - window[0].start,
                c0 - window[1].start : c1 - window[1].start,
            ] = True
            to_pick = inside & ((sub_state == _LEFT) | (sub_state == _LOST))
            to_lose = ~inside & (sub_state == _LEFT)
            new_picked = picked + count(sub_labels[to_pick])
            new_lost = lost - count(sub_labels[inside & (sub_state == _LOST)])
            new_lost = new_lost + count(sub_labels[to_lose])
            new_error = error(new_picked, new_lost)
            if new_error < current:
                sub_state[to_pick] = _PICKED
                sub_state[to_lose] = _LOST
                chosen[block], picked, lost, current = True, new_picked, new_lost, new_error
        left = totals - picked - lost
        absent = int((present & (picked == 0)).sum() + (present & (left == 0)).sum())
        key = (absent, current)
        if best_key is None or key < best_key:
            best, best_key = chosen, key
    return best


_IGNORED, _LEFT, _PICKED, _LOST = 0, 1, 2, 3


#: Split protocols by name, for :func:`make_split`.
PROTOCOLS: dict[str, Callable[..., Split]] = {
    "per_class": per_class_split,
    "spatially_disjoint": spatially_disjoint_split,
}


def make_split(labels: np.ndarray, protocol: str, seed: int = 0, **params: Any) -> Split:
    """Make a split by protocol name: ``"per_class"`` or ``"spatially_disjoint"``.

    Args:
        labels: (H, W) integer raster, 0 = unlabelled, 1..K = classes.
        protocol: the protocol's name.
        seed: seed of the random draw.
        **params: the protocol's own parameters (see :func:`per_class_split` and
            :func:`spatially_disjoint_split`).

    Raises:
        ValueError: unknown protocol.
        TypeError: a parameter the protocol does not take.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"Unknown split protocol {protocol!r}; choose one of {sorted(PROTOCOLS)}.")
    function = PROTOCOLS[protocol]
    accepted = [p for p in inspect.signature(function).parameters if p not in ("labels", "seed")]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise TypeError(
            f"Split protocol {protocol!r} does not take {unknown}; its parameters are {accepted}."
        )
    return function(labels, seed=seed, **params)
