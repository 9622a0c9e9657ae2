"""Pixel classification: the patch around each pixel, for TerraTorch's ``ClassificationTask``."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from terratorch_hsi_peft.datamodules.base import HyperspectralDataModule
from terratorch_hsi_peft.datamodules.loaders import Interpolation, resize_windows
from terratorch_hsi_peft.datamodules.windows import gather_windows, pixel_major

__all__ = ["HyperspectralPatchDataModule", "PixelPatchDataset"]


class PixelPatchDataset(torch.utils.data.Dataset):
    """``patch_size x patch_size`` windows centred on given pixels of one reflect-padded cube.

    A batch is cut in one advanced-indexing gather (``__getitems__``), never pixel by pixel.

    Args:
        padded: (k, H + 2r, W + 2r) cube, reflect-padded by ``r = patch_size // 2``.
        pixels: flat row-major indices (into the unpadded H x W raster) of the centre pixels.
        width: W, the unpadded scene width.
        patch_size: window side (odd).
        targets: class index of each centre pixel, or ``None`` (prediction).
    """

    def __init__(
        self,
        padded: torch.Tensor,
        pixels: np.ndarray,
        width: int,
        patch_size: int,
        targets: np.ndarray | None = None,
    ) -> None:
        self.padded = padded
        self.pixels = torch.as_tensor(pixels, dtype=torch.int64)
        self.width = width
        self.patch_size = patch_size
        self.targets = None if targets is None else torch.as_tensor(targets, dtype=torch.int64)
        self._offsets = torch.arange(patch_size)

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """The batch of samples ``indices``: ``image`` (B, k, p, p) and ``label`` (B,)."""
        centres = self.pixels[torch.as_tensor(indices, dtype=torch.int64)]
        # Row r of the scene is row r + radius of the padded cube, so a window starts at r.
        rows = (centres // self.width)[:, None] + self._offsets
        cols = (centres % self.width)[:, None] + self._offsets
        batch = {"image": gather_windows(self.padded, rows, cols)}
        if self.targets is not None:
            batch["label"] = self.targets[torch.as_tensor(indices, dtype=torch.int64)]
        return batch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: value[0] for key, value in self.__getitems__([index]).items()}

    def paste(self, class_map: np.ndarray, indices: list[int], predictions: torch.Tensor) -> None:
        """Write the predicted class of each sample's centre pixel into ``class_map`` (H, W)."""
        if predictions.ndim != 1:
            raise ValueError(
                f"Patch predictions must be one class index per sample, got shape "
                f"{tuple(predictions.shape)}; use ClassificationTask's default predict output."
            )
        class_map.reshape(-1)[self.pixels[indices].numpy()] = predictions.cpu().numpy()


class HyperspectralPatchDataModule(HyperspectralDataModule):
    """Patch classification of a hyperspectral scene for TerraTorch's ``ClassificationTask``.

    Every sample is the ``patch_size x patch_size`` window around one pixel (the scene is
    reflect-padded once, so border pixels get full windows) with the pixel's class as its label.
    Windows are cut from the band-routed cube in one vectorised gather per batch and resized to
    ``img_size`` after the batch reached the device (on the GPU when there is one).

    Batches: ``image`` (B, k, img_size, img_size) float32 with k = :attr:`num_bands`, and
    ``label`` (B,) int64 class indices 0..K-1 (raw label - 1). Training, validation and test
    samples are the split's pixels; ``predict`` covers every pixel of the scene, labelled or not,
    in row-major order (pair it with :class:`~terratorch_hsi_peft.callbacks.ClassMapWriter`).

    Model config: ``model_args.num_classes`` = :attr:`num_classes` (16 for Indian Pines) and
    ``backbone_num_bands`` = :attr:`num_bands` (``num_components`` for ``pca``, 12 for
    ``sentinel2``, the scene's band count otherwise), ``backbone_img_size`` = ``img_size``;
    ``ignore_index`` unset (an index of one of the classes would leave that class out).
    ``setup`` raises a ValueError naming the fix when the task's values differ.

    Band-route statistics are fitted on training pixels only and saved with the split in every
    Lightning checkpoint (:meth:`state_dict`); ``test``/``predict`` with ``ckpt_path`` reuse them.

    Augmentation (``train_transform``): albumentations transforms see each window as a
    (p, p, k) array; the plugin's batch transforms run before the resize. Use transforms that
    keep the centre pixel in place (flips, right-angle rotations): it carries the label.

    Args:
        patch_size: side of the window cut around each pixel (odd, >= 1).
        img_size: side the windows are resized to before the model (the backbone's
            ``img_size``).
        interpolation: resize mode: ``bilinear``, ``bicubic`` or ``nearest``.
        **kwargs: the arguments every hyperspectral datamodule takes (``scene``, ``root``,
            ``split``, ``band_route``, ``batch_size``, ``train_transform``, ...): see
            :class:`~terratorch_hsi_peft.datamodules.HyperspectralDataModule`.
    """

    task_name = "ClassificationTask"

    def __init__(
        self,
        *,
        patch_size: int = 9,
        img_size: int = 32,
        interpolation: Interpolation = "bilinear",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if patch_size < 1 or patch_size % 2 == 0:
            raise ValueError(f"patch_size={patch_size} must be odd and >= 1 (a centred window).")
        if img_size < 1:
            raise ValueError(f"img_size={img_size} must be >= 1.")
        if interpolation not in ("bilinear", "bicubic", "nearest"):
            raise ValueError(
                f"interpolation={interpolation!r}: use 'bilinear', 'bicubic' or 'nearest'."
            )
        self.patch_size = patch_size
        self.img_size = img_size
        self.interpolation = interpolation
        self._padded: torch.Tensor | None = None
        self._padded_source: torch.Tensor | None = None

    def _split_defaults(self, protocol: str) -> dict[str, Any]:
        # The leak buffer of a spatially disjoint split must match the windows the model sees.
        return {"patch_size": self.patch_size} if protocol == "spatially_disjoint" else {}

    def _check_ignore_index(self, ignore_index: Any) -> None:
        # Every sample is a labelled pixel: an ignore_index among the classes drops a class.
        if isinstance(ignore_index, int) and 0 <= ignore_index < self.scene.num_classes:
            raise ValueError(
                f"The task's ignore_index is {ignore_index}, the index of class "
                f"{self.class_names[ignore_index]!r}: its pixels would be left out of the loss "
                "and the metrics. Patch samples are all labelled: leave ignore_index at its "
                "default (-100)."
            )

    def _padded_cube(self) -> torch.Tensor:
        cube = self.routed_cube()
        if self._padded is None or self._padded_source is not cube:
            radius = self.patch_size // 2
            if radius >= min(cube.shape[1:]):
                raise ValueError(
                    f"patch_size={self.patch_size} needs a scene larger than {radius} pixels on "
                    f"each side (reflect padding); the scene is {tuple(cube.shape[1:])}."
                )
            pad = (radius, radius, radius, radius)
            padded = F.pad(cube[None], pad, mode="reflect")[0] if radius else cube
            self._padded = pixel_major(padded)
            self._padded_source = cube
        return self._padded

    def _make_dataset(self, stage: str) -> PixelPatchDataset:
        height, width = self.scene.shape
        if stage == "predict":
            pixels, targets = np.arange(height * width), None
        else:
            pixels = getattr(self.split, stage)
            targets = self.targets(pixels)
        return PixelPatchDataset(self._padded_cube(), pixels, width, self.patch_size, targets)

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict:
        """Augment training windows (``train_transform``), then resize them to ``img_size``.

        Both run on the device the batch now lives on.
        """
        batch = super().on_after_batch_transfer(batch, dataloader_idx)
        batch["image"] = resize_windows(batch["image"], self.img_size, self.interpolation)
        return batch
