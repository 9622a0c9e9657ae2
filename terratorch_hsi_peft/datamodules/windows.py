"""Cutting many windows out of one in-memory cube in a single gather."""

from __future__ import annotations

import torch

__all__ = ["gather_windows", "pixel_major"]


def pixel_major(cube: torch.Tensor) -> torch.Tensor:
    """A (k, H, W) cube laid out pixel by pixel in memory (each pixel's k values adjacent).

    The shape and values are unchanged; only the strides differ: ``(1, W * k, k)``. Windows
    cut from such a cube are gathered as whole spectra, which :func:`gather_windows` needs to
    be fast. Returns the cube itself when it is already laid out that way.
    """
    return cube.permute(1, 2, 0).contiguous().permute(2, 0, 1)


def gather_windows(cube: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """The windows ``cube[:, rows[b]][:, :, cols[b]]`` of a (k, H, W) cube, as (B, k, h, w).

    Args:
        cube: (k, H, W) tensor; keep it :func:`pixel_major` (any layout gives the same values,
            at the cost of one copy of the cube per call).
        rows: (B, h) row indices of each window.
        cols: (B, w) column indices of each window.

    One ``index_select`` of whole spectra over the pixel-major raster (about 4x faster on the
    CPU than gathering band by band, and 25x faster than three-index advanced indexing). The
    windows come back in channels-last memory format (``torch.channels_last``): the model's
    1x1 convolutions read it faster, and every op accepts it.
    """
    channels, _, width = cube.shape
    flat = (rows[:, :, None] * width + cols[:, None, :]).reshape(-1)
    source = cube.permute(1, 2, 0).reshape(-1, channels)
    spectra = torch.index_select(source, 0, flat)
    windows = spectra.reshape(rows.shape[0], rows.shape[1], cols.shape[1], channels)
    return windows.permute(0, 3, 1, 2)
