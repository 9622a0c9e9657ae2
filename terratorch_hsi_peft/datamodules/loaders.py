"""Loaders and the transfer hook's resize: what every datamodule does with its datasets.

The datasets cut a whole batch in one gather (``__getitems__``), so the loaders hand batches
through as they are; windows are resized after they reached the device (on the GPU when there
is one), never in the loader processes.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info

__all__ = ["Interpolation", "batch_loader", "resize_windows", "skip_validation"]

#: Resize modes of the windows.
Interpolation = Literal["bilinear", "bicubic", "nearest"]


def batch_loader(
    dataset: torch.utils.data.Dataset,
    batch_size: int,
    num_workers: int,
    shuffle: bool = False,
) -> torch.utils.data.DataLoader:
    """A DataLoader over a dataset whose ``__getitems__`` returns a whole batch.

    Args:
        dataset: the samples.
        batch_size: samples per batch.
        num_workers: loader processes (0: batches are cut in the main process).
        shuffle: reshuffle every epoch (training).
    """
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        collate_fn=_already_batched,
        persistent_workers=num_workers > 0,
    )


def skip_validation(trainer: Any, owner: str, reason: str) -> None:
    """Turn the trainer's validation loop off for data without validation samples.

    Lightning would otherwise run it on an empty loader and warn that the loader's length is
    zero (an empty list instead of a loader warns the same); ``limit_val_batches: 0`` is its
    own way to train without validation. Called from ``setup("fit")``, before any loop runs.

    Args:
        trainer: the attached trainer (``None``, or a stand-in without ``limit_val_batches``:
            nothing to do).
        owner: the datamodule's name, for the console line.
        reason: why there is nothing to validate on (the setting that says so).
    """
    if getattr(trainer, "limit_val_batches", 0) == 0:
        return
    trainer.limit_val_batches = 0
    rank_zero_info(f"{owner}: {reason}, so the validation loop is skipped.")


def resize_windows(
    image: torch.Tensor, size: int, interpolation: Interpolation = "bilinear"
) -> torch.Tensor:
    """Square windows (..., h, w) resized to ``size x size`` on their device (unchanged when
    they have that size already); leading dimensions are kept."""
    if tuple(image.shape[-2:]) == (size, size):
        return image
    flat = image.reshape(-1, *image.shape[-3:])
    smooth = interpolation != "nearest"
    resized = F.interpolate(
        flat, size=(size, size), mode=interpolation, align_corners=False if smooth else None
    )
    return resized.reshape(*image.shape[:-2], size, size)


def _already_batched(batch: Any) -> Any:
    """Collate function for datasets whose ``__getitems__`` returns a whole batch."""
    return batch
