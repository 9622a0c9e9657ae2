"""Band centres (nm) of the benchmark sensors, for scenes whose files carry no wavelengths.

These are approximations, documented as such: each sensor's channels are taken as evenly spaced
over its published range, and a scene keeps the channels its distributor documents (1-based
channel numbers, as published). They are close enough (a few nm) to resample bands onto another
sensor's response; they are not a calibration.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = ["aviris_wavelengths", "hyperion_wavelengths", "rosis_wavelengths"]

#: AVIRIS: 224 channels of about 10 nm over about 400-2500 nm.
AVIRIS_CHANNELS = 224
AVIRIS_RANGE_NM = (400.0, 2500.0)
#: ROSIS: the distributed Pavia scenes cover 430-860 nm.
ROSIS_RANGE_NM = (430.0, 860.0)
#: Hyperion: 242 channels; VNIR channels 1-70 span 355.59-1058.01 nm and SWIR channels 71-242 span
#: 851.92-2577.08 nm (USGS EO-1 Hyperion band table, end points; evenly spaced in between).
HYPERION_VNIR = (1, 70, 355.59, 1058.01)
HYPERION_SWIR = (71, 242, 851.92, 2577.08)


def _kept(channels: int, dropped: Iterable[tuple[int, int]]) -> np.ndarray:
    """0-based indices of the channels 1..channels left after dropping inclusive 1-based ranges."""
    keep = np.ones(channels, dtype=bool)
    for first, last in dropped:
        keep[first - 1 : last] = False
    return np.flatnonzero(keep)


def aviris_wavelengths(
    dropped: Iterable[tuple[int, int]] = (), channels: int = AVIRIS_CHANNELS
) -> np.ndarray:
    """AVIRIS band centres (nm) left after dropping channel ranges (inclusive, 1-based).

    Args:
        dropped: removed channel ranges, numbered in the scene's uncorrected release.
        channels: channels of that release, spread evenly over 400-2500 nm: 224 for most scenes,
            220 for Indian Pines (whose release already lacks four AVIRIS channels).

    Example: Salinas (corrected) drops ``[(108, 112), (154, 167), (224, 224)]``: 204 remain.
    """
    full = np.linspace(*AVIRIS_RANGE_NM, channels)
    return full[_kept(channels, dropped)]


def rosis_wavelengths(bands: int) -> np.ndarray:
    """ROSIS band centres (nm): ``bands`` evenly spaced over 430-860 nm (an approximation)."""
    return np.linspace(*ROSIS_RANGE_NM, bands)


def hyperion_wavelengths(kept: Iterable[tuple[int, int]]) -> np.ndarray:
    """Hyperion band centres (nm) of the kept channel ranges (inclusive, 1-based)."""
    centres = np.empty(HYPERION_SWIR[1])
    for first, last, start, stop in (HYPERION_VNIR, HYPERION_SWIR):
        centres[first - 1 : last] = np.linspace(start, stop, last - first + 1)
    indices = np.concatenate([np.arange(first - 1, last) for first, last in kept])
    return centres[indices]
