"""Sparse-label segmentation: tiles of the scene, for TerraTorch's ``SemanticSegmentationTask``."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from terratorch_hsi_peft.datamodules.base import IGNORE_INDEX, HyperspectralDataModule
from terratorch_hsi_peft.datamodules.windows import gather_windows, pixel_major

__all__ = ["HyperspectralSceneDataModule", "SceneTileDataset", "tile_grid"]


def tile_grid(length: int, tile: int, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tile starts along one axis and the interval of positions each tile *owns*.

    Tiles start every ``stride`` pixels, the last one flush with the edge. A position is owned by
    the tile whose centre is nearest (the first on ties), so owned intervals cover the axis once.

    Returns:
        ``(starts, lo, hi)``: tile ``i`` covers ``starts[i] .. starts[i] + tile`` and owns its
        local positions ``lo[i] .. hi[i]`` (empty when ``lo == hi``).
    """
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    starts = np.asarray(starts)
    centres = starts + (tile - 1) / 2
    owner = np.argmin(np.abs(np.arange(length)[:, None] - centres[None, :]), axis=1)
    lo, hi = np.zeros(len(starts), np.int64), np.zeros(len(starts), np.int64)
    for i, start in enumerate(starts):
        owned = np.flatnonzero(owner == i)
        if owned.size:
            lo[i], hi[i] = owned[0] - start, owned[-1] + 1 - start
    return starts, lo, hi


class SceneTileDataset(torch.utils.data.Dataset):
    """Square tiles of one cube, with a mask of the labels each tile owns.

    Args:
        cube: (k, H, W) band-routed cube (H, W >= ``tile_size``).
        tile_size: tile side.
        tops, lefts: (N,) tile origins.
        own: (N, 4) owned window of each tile in tile coordinates: row_lo, row_hi, col_lo,
            col_hi. Masks are ``IGNORE_INDEX`` outside it; predictions are pasted from it.
        targets: (H, W) class indices with ``IGNORE_INDEX`` for pixels outside the subset, or
            ``None`` (prediction).
    """

    def __init__(
        self,
        cube: torch.Tensor,
        tile_size: int,
        tops: np.ndarray,
        lefts: np.ndarray,
        own: np.ndarray,
        targets: torch.Tensor | None = None,
    ) -> None:
        self.cube = cube
        self.tile_size = tile_size
        self.tops = torch.as_tensor(tops, dtype=torch.int64)
        self.lefts = torch.as_tensor(lefts, dtype=torch.int64)
        self.own = torch.as_tensor(own, dtype=torch.int64).reshape(-1, 4)
        self.targets = targets
        self._offsets = torch.arange(tile_size)

    def __len__(self) -> int:
        return len(self.tops)

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """The batch of tiles ``indices``: ``image`` (B, k, t, t) and ``mask`` (B, t, t)."""
        idx = torch.as_tensor(indices, dtype=torch.int64)
        rows = self.tops[idx][:, None] + self._offsets
        cols = self.lefts[idx][:, None] + self._offsets
        # Every batch in new memory: a consumer may keep it, expose its storage or share it
        # with another process, so no batch's memory is ever handed out again.
        batch = {"image": gather_windows(self.cube, rows, cols)}
        if self.targets is not None:
            own = self.own[idx]
            in_rows = (self._offsets >= own[:, :1]) & (self._offsets < own[:, 1:2])
            in_cols = (self._offsets >= own[:, 2:3]) & (self._offsets < own[:, 3:4])
            crop = self.targets[rows[:, :, None], cols[:, None, :]]
            owned = in_rows[:, :, None] & in_cols[:, None, :]
            batch["mask"] = torch.where(owned, crop, torch.full_like(crop, IGNORE_INDEX))
        return batch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: value[0] for key, value in self.__getitems__([index]).items()}

    def paste(self, class_map: np.ndarray, indices: list[int], predictions: torch.Tensor) -> None:
        """Write each tile's owned window of predicted classes into ``class_map`` (H, W)."""
        t = self.tile_size
        if predictions.ndim != 3 or tuple(predictions.shape[1:]) != (t, t):
            raise ValueError(
                f"Tile predictions must be (B, {t}, {t}) class indices, got shape "
                f"{tuple(predictions.shape)}; keep the task's output_on_inference: prediction."
            )
        predictions = predictions.cpu().numpy()
        height, width = class_map.shape
        for pred, i in zip(predictions, indices, strict=True):
            r0, r1, c0, c1 = self.own[i].tolist()
            top, left = int(self.tops[i]), int(self.lefts[i])
            r1, c1 = min(r1, height - top), min(c1, width - left)
            class_map[top + r0 : top + r1, left + c0 : left + c1] = pred[r0:r1, c0:c1]


class HyperspectralSceneDataModule(HyperspectralDataModule):
    """Sparse-label segmentation of a hyperspectral scene for ``SemanticSegmentationTask``.

    The band-routed scene is cut into ``tile_size x tile_size`` tiles. Batches: ``image``
    (B, k, t, t) float32 with k = :attr:`num_bands`, and ``mask`` (B, t, t) int64 holding class
    indices 0..K-1 (raw label - 1) at the stage's pixels and -1 everywhere else: set the task's
    ``ignore_index: -1``.

    - Training tiles start every ``train_stride`` pixels; those holding at least one training
      pixel are used, labelled at training pixels only.
    - Validation, test and predict tiles start every ``inference_stride`` pixels; every pixel
      belongs to exactly one of them (the one whose centre is nearest), so metrics count each
      pixel once and the predicted map is stitched from tile centres.
    - ``predict`` covers every pixel of the scene, labelled or not (pair it with
      :class:`~terratorch_hsi_peft.callbacks.ClassMapWriter`).

    What the model sees during training: the spectra of the pixels inside a training tile as
    spatial context, labels at training pixels only. With ``hide_held_out`` (the default for a
    ``spatially_disjoint`` split) every pixel of a block holding a validation or test pixel is
    replaced in training tiles by the training pixels' mean (routed) spectrum, so no training
    tile shows a validation or test block (the tile counterpart of the patch datamodule's
    guarantee that no training window touches a test block). Without it (the default for
    ``per_class``, the literature's transductive setting), training tiles show every pixel's
    spectrum, validation and test pixels included. Band-route statistics come from training
    pixels only. Validation, test and predict tiles always show the whole scene.

    Model config: ``model_args.num_classes`` = :attr:`num_classes`, ``backbone_num_bands`` =
    :attr:`num_bands`, ``backbone_img_size`` = ``tile_size``; the task needs ``ignore_index: -1``.
    ``setup`` raises a ValueError naming the fix when the task's values differ.

    Augmentation (``train_transform``): albumentations transforms see each tile, the image
    (t, t, k) and its mask together (give rotations ``fill_mask: -1`` so new pixels are ignored).

    Args:
        batch_size: tiles per batch (also for predict).
        tile_size: tile side in pixels (the backbone's ``img_size``; a multiple of its patch
            size). A scene smaller than a tile is reflect-padded up to it.
        train_stride: distance between training tile origins (default ``tile_size // 2``).
        inference_stride: distance between validation/test/predict tile origins (default
            ``tile_size // 2``; ``tile_size`` predicts each tile once, with less context at
            tile borders).
        hide_held_out: in training tiles, replace held-out pixels by the training pixels' mean
            spectrum: whole blocks (``block_size``) holding a validation or test pixel for a
            ``spatially_disjoint`` split, the validation and test pixels themselves otherwise.
            Default (``None``): on for ``spatially_disjoint``, off for ``per_class``.
        **kwargs: the arguments every hyperspectral datamodule takes (``scene``, ``root``,
            ``split``, ``band_route``, ``num_workers``, ``train_transform``, ...): see
            :class:`~terratorch_hsi_peft.datamodules.HyperspectralDataModule`.
    """

    task_name = "SemanticSegmentationTask"

    def __init__(
        self,
        *,
        batch_size: int = 8,
        tile_size: int = 32,
        train_stride: int | None = None,
        inference_stride: int | None = None,
        hide_held_out: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(batch_size=batch_size, **kwargs)
        self.tile_size = tile_size
        self.train_stride = train_stride or max(tile_size // 2, 1)
        self.inference_stride = inference_stride or max(tile_size // 2, 1)
        for name in ("tile_size", "train_stride", "inference_stride"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"{name}={value} must be >= 1.")
        if max(self.train_stride, self.inference_stride) > tile_size:
            raise ValueError(
                "train_stride and inference_stride must not exceed tile_size, or pixels between "
                "tiles are never seen; lower the strides."
            )
        if hide_held_out is not None and not isinstance(hide_held_out, bool):
            raise ValueError(f"hide_held_out must be true, false or null, got {hide_held_out!r}.")
        self.hide_held_out = hide_held_out
        self._tiled: dict[str, torch.Tensor] = {}
        self._tiled_source: torch.Tensor | None = None

    def _check_ignore_index(self, ignore_index: Any) -> None:
        if ignore_index != IGNORE_INDEX:
            raise ValueError(
                f"The task's ignore_index is {ignore_index!r}, but {type(self).__name__} marks "
                f"every pixel outside the stage's labelled subset with {IGNORE_INDEX}, which the "
                f"loss and the metrics must skip; set the task's ignore_index: {IGNORE_INDEX}."
            )

    @property
    def hides_held_out(self) -> bool:
        """Whether training tiles hide held-out pixels (``hide_held_out``, resolved)."""
        if self.hide_held_out is None:
            return self.split.protocol == "spatially_disjoint"
        return self.hide_held_out

    def held_out_mask(self) -> np.ndarray:
        """(H, W) bool: the pixels training tiles hide when :attr:`hides_held_out`."""
        split, (height, width) = self.split, self.scene.shape
        held_out = np.concatenate([split.val, split.test])
        hidden = np.zeros(height * width, dtype=bool)
        hidden[held_out] = True
        block = split.params.get("block_size") if split.protocol == "spatially_disjoint" else None
        if block:  # whole blocks, on the grid the split was drawn on
            ids = (np.arange(height)[:, None] // block) * (-(-width // block)) + (
                np.arange(width)[None, :] // block
            )
            hidden = np.isin(ids, ids.ravel()[held_out])
        return hidden.reshape(height, width)

    def _tiled_cube(self, stage: str = "predict") -> torch.Tensor:
        """The routed cube (held-out pixels hidden for training tiles when asked), reflect-padded
        at the bottom/right up to one tile when smaller than one."""
        cube = self.routed_cube()
        if self._tiled_source is not cube:
            self._tiled, self._tiled_source = {}, cube
        key = "train" if stage == "train" and self.hides_held_out else "all"
        if key not in self._tiled:
            pad_rows = max(self.tile_size - cube.shape[1], 0)
            pad_cols = max(self.tile_size - cube.shape[2], 0)
            if pad_rows >= cube.shape[1] or pad_cols >= cube.shape[2]:
                raise ValueError(
                    f"tile_size={self.tile_size} is more than twice the scene's size "
                    f"{tuple(cube.shape[1:])}; lower tile_size."
                )
            shown = cube
            if key == "train":
                train = torch.from_numpy(self.split.train)
                width = cube.shape[2]
                mean = cube[:, train // width, train % width].mean(dim=1)
                hidden = torch.from_numpy(self.held_out_mask())
                shown = torch.where(hidden, mean[:, None, None], cube)
            padding = (0, pad_cols, 0, pad_rows)
            padded = F.pad(shown[None], padding, mode="reflect")[0] if any(padding) else shown
            self._tiled[key] = pixel_major(padded)
        return self._tiled[key]

    def _make_dataset(self, stage: str) -> SceneTileDataset:
        cube = self._tiled_cube(stage)
        t = self.tile_size
        stride = self.train_stride if stage == "train" else self.inference_stride
        row_starts, row_lo, row_hi = tile_grid(cube.shape[1], t, stride)
        col_starts, col_lo, col_hi = tile_grid(cube.shape[2], t, stride)
        if stage == "train":  # a training tile is labelled wherever it holds training pixels
            row_lo, row_hi = np.zeros_like(row_lo), np.full_like(row_hi, t)
            col_lo, col_hi = np.zeros_like(col_lo), np.full_like(col_hi, t)
        i, j = np.meshgrid(np.arange(len(row_starts)), np.arange(len(col_starts)), indexing="ij")
        i, j = i.ravel(), j.ravel()
        own = np.stack([row_lo[i], row_hi[i], col_lo[j], col_hi[j]], axis=1)
        tops, lefts = row_starts[i], col_starts[j]

        targets = None
        height, width = self.scene.shape
        # A tile is kept when its owned window holds a pixel of the stage's subset.
        wanted = np.zeros(cube.shape[1:], dtype=bool)
        if stage == "predict":
            wanted[:height, :width] = True
        else:
            pixels = getattr(self.split, stage)
            raster = np.full(cube.shape[1:], IGNORE_INDEX, dtype=np.int64)
            raster[pixels // width, pixels % width] = self.targets(pixels)
            targets = torch.from_numpy(raster)
            wanted = raster != IGNORE_INDEX
        keep = [
            wanted[top + r0 : top + r1, left + c0 : left + c1].any()
            for top, left, (r0, r1, c0, c1) in zip(tops, lefts, own, strict=True)
        ]
        return SceneTileDataset(cube, t, tops[keep], lefts[keep], own[keep], targets)
