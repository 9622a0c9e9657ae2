"""Window gathering: the same values as plain indexing, from either memory layout."""

from __future__ import annotations

import torch

from terratorch_hsi_peft.datamodules.windows import gather_windows, pixel_major


def _reference(cube: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    return torch.stack([cube[:, r][:, :, c] for r, c in zip(rows, cols, strict=True)])


def _windows(size: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    cube = torch.randn(7, 13, 11, generator=generator)
    tops = torch.tensor([0, 3, 8, 8])
    lefts = torch.tensor([0, 6, 2, 6])
    offsets = torch.arange(size)
    return cube, tops[:, None] + offsets, lefts[:, None] + offsets


def test_pixel_major_keeps_shape_and_values_and_puts_each_spectrum_together() -> None:
    cube, _, _ = _windows()
    laid_out = pixel_major(cube)
    assert laid_out.shape == cube.shape
    assert torch.equal(laid_out, cube)
    assert laid_out.stride() == (1, 11 * 7, 7)
    # Already pixel-major: the same memory, no copy.
    assert pixel_major(laid_out).data_ptr() == laid_out.data_ptr()


def test_gather_matches_indexing_from_either_layout() -> None:
    cube, rows, cols = _windows()
    expected = _reference(cube, rows, cols)
    for source in (cube, pixel_major(cube)):
        windows = gather_windows(source, rows, cols)
        assert windows.shape == (4, 7, 5, 5)
        assert torch.equal(windows, expected)
        assert windows.is_contiguous(memory_format=torch.channels_last)


def test_gather_takes_non_square_and_scattered_windows() -> None:
    cube, _, _ = _windows()
    rows = torch.tensor([[0, 2, 4], [12, 11, 10]])
    cols = torch.tensor([[1, 1], [10, 0]])
    assert torch.equal(gather_windows(pixel_major(cube), rows, cols), _reference(cube, rows, cols))
