"""Resizing of SpectralGPT's two learned position tables (spatial grid and spectral groups).

Both work on the tables' own device and compute in at least float32 (bicubic interpolation is
not implemented for every reduced precision on every device), then cast back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["resize_spatial_pos_embed", "resize_spectral_pos_embed"]


def resize_spatial_pos_embed(
    table: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]
) -> torch.Tensor:
    """Resize a spatial table (1, old_h * old_w, D) to (1, new_h * new_w, D), bicubically.

    Rows are read in raster order (row-major ``h w``), as the patch embedding lays tokens out.
    """
    if tuple(old_grid) == tuple(new_grid):
        return table
    dim = table.shape[-1]
    image = table.reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)
    image = image.to(_compute_dtype(table))
    image = F.interpolate(image, size=tuple(new_grid), mode="bicubic", align_corners=False)
    return image.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], dim).to(table.dtype)


def resize_spectral_pos_embed(table: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Resize a spectral table (1, old_groups, D) to (1, num_groups, D), linearly.

    Each group is treated as a cell covering an equal share of the spectrum
    (``align_corners=False``), so the first and last groups keep the ends of the spectrum.
    """
    if table.shape[1] == num_groups:
        return table
    line = table.transpose(1, 2).to(_compute_dtype(table))
    line = F.interpolate(line, size=num_groups, mode="linear", align_corners=False)
    return line.transpose(1, 2).to(table.dtype)


def _compute_dtype(table: torch.Tensor) -> torch.dtype:
    return torch.promote_types(table.dtype, torch.float32)
