"""Training augmentation in TerraTorch's convention: ``train_transform`` lists from YAML.

The datamodules' ``train_transform`` takes the same list as TerraTorch's generic datamodules
(``class_path`` / ``init_args`` entries, or instances). Two kinds of entries are accepted:

- albumentations transforms (``albumentations.HorizontalFlip``, ...): applied per sample in the
  data loader, to the image (H, W, k) and, for tiles, to the mask together with it;
- the plugin's batch transforms (:class:`RandomFlipRotate`, :class:`SpectralJitter`): applied to
  whole batches after they reached the device (``on_after_batch_transfer``), so they cost the
  loader nothing and run on the GPU when there is one.

Albumentations entries must come before batch entries (they run first, in the loader). Only
training batches are transformed; validation, test and predict batches never are.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "BatchTransform",
    "RandomFlipRotate",
    "SampleTransformDataset",
    "SpectralJitter",
    "split_train_transform",
]

Batch = dict[str, Any]


class BatchTransform:
    """A transform of a whole batch dict (``image`` (B, k, H, W), optional ``mask`` (B, H, W)).

    Runs on the batch's device with torch's global random generator (seeded by
    ``seed_everything``); subclasses implement :meth:`__call__`.
    """

    def __call__(self, batch: Batch) -> Batch:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{key}={value!r}" for key, value in vars(self).items())
        return f"{type(self).__name__}({fields})"


class RandomFlipRotate(BatchTransform):
    """Random flips and right-angle rotations of square images (and their masks).

    Each sample independently gets a horizontal flip, a vertical flip and a transpose, each with
    probability ``p``; with ``p=0.5`` the eight symmetries of the square (the four rotations and
    their mirror images) are equally likely. The centre pixel of an odd patch stays the centre,
    so patch labels stay valid.

    Args:
        p: probability of each of the three elementary operations (0 <= p <= 1).
    """

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomFlipRotate p={p} must lie in [0, 1].")
        self.p = p

    def __call__(self, batch: Batch) -> Batch:
        image = batch["image"]
        if image.shape[-1] != image.shape[-2]:
            raise ValueError(
                f"RandomFlipRotate needs square images (right-angle rotations keep the shape), "
                f"got {tuple(image.shape[-2:])}; use albumentations flips for rectangles."
            )
        mask = batch.get("mask")
        # One draw per sample and operation: (B, 3) booleans on the batch's device.
        draws = torch.rand(image.shape[0], 3, device=image.device) < self.p
        for column, op in enumerate((_flip_w, _flip_h, _transpose)):
            chosen = draws[:, column]
            image = torch.where(chosen[:, None, None, None], op(image), image)
            if mask is not None:
                mask = torch.where(chosen[:, None, None], op(mask), mask)
        batch["image"] = image
        if mask is not None:
            batch["mask"] = mask
        return batch


def _flip_w(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-1)


def _flip_h(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-2)


def _transpose(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(-1, -2)


class SpectralJitter(BatchTransform):
    """Random per-sample, per-band gains and additive noise on the (band-routed) image.

    ``image[b, c] * (1 + gain_std * n[b, c]) + noise_std * e[b, c, y, x]`` with standard normal
    ``n`` and ``e``. Masks are untouched. The scale refers to the routed bands (unit variance
    after ``pca`` with whitening or ``standardize``).

    Args:
        gain_std: standard deviation of the per-band gain around 1 (>= 0).
        noise_std: standard deviation of per-pixel additive noise (>= 0).
    """

    def __init__(self, gain_std: float = 0.05, noise_std: float = 0.0) -> None:
        if gain_std < 0 or noise_std < 0:
            raise ValueError(
                f"SpectralJitter gain_std={gain_std} and noise_std={noise_std} must be >= 0."
            )
        self.gain_std = gain_std
        self.noise_std = noise_std

    def __call__(self, batch: Batch) -> Batch:
        image = batch["image"]
        gains = torch.randn(image.shape[:2], device=image.device, dtype=image.dtype)
        image = image * (1 + self.gain_std * gains)[:, :, None, None]
        if self.noise_std:
            image = image + self.noise_std * torch.randn_like(image)
        batch["image"] = image
        return batch


def split_train_transform(
    transforms: Sequence[Any] | None,
) -> tuple[Callable[..., dict[str, Any]] | None, list[BatchTransform]]:
    """Split a ``train_transform`` list into (per-sample albumentations Compose, batch transforms).

    Entries are instances or TerraTorch-style dicts ``{class_path, init_args}``. An
    ``albumentations.pytorch.ToTensorV2`` (common at the end of TerraTorch lists) is dropped: the
    datamodules already give tensors.

    Raises:
        TypeError: an entry is neither an albumentations transform nor a :class:`BatchTransform`.
        ValueError: an albumentations entry follows a batch entry (the order could not be kept).
    """
    if transforms is None:
        return None, []
    if isinstance(transforms, dict) or not isinstance(transforms, Sequence):
        raise TypeError(
            "train_transform must be a list of transforms (class_path/init_args entries), "
            f"got {type(transforms).__name__}."
        )
    import albumentations as A
    from albumentations.pytorch import ToTensorV2

    per_sample: list[Any] = []
    per_batch: list[BatchTransform] = []
    for position, entry in enumerate(transforms):
        transform = _instantiate(entry) if isinstance(entry, dict) else entry
        if isinstance(transform, ToTensorV2):
            continue
        if isinstance(transform, BatchTransform):
            per_batch.append(transform)
        elif isinstance(transform, A.BasicTransform | A.BaseCompose):
            if per_batch:
                raise ValueError(
                    f"train_transform[{position}] ({type(transform).__name__}) is an "
                    "albumentations transform after a batch transform; albumentations run first "
                    "(per sample, in the loader), so list them before "
                    f"{type(per_batch[0]).__name__}."
                )
            per_sample.append(transform)
        else:
            raise TypeError(
                f"train_transform[{position}] is a {type(transform).__name__}; give albumentations "
                "transforms (class_path: albumentations.HorizontalFlip, ...) or the plugin's "
                "batch transforms (terratorch_hsi_peft.transforms.RandomFlipRotate, "
                "SpectralJitter)."
            )
    compose = A.Compose(per_sample, is_check_shapes=False) if per_sample else None
    return compose, per_batch


def _instantiate(entry: dict[str, Any]) -> Any:
    if "class_path" not in entry:
        raise ValueError(f"train_transform entry {entry} has no class_path; name the class.")
    module_name, _, class_name = entry["class_path"].rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as error:
        raise ValueError(
            f"train_transform class_path {entry['class_path']!r} cannot be imported ({error}); "
            "give the full dotted path, e.g. albumentations.HorizontalFlip."
        ) from error
    return cls(**entry.get("init_args", {}))


class SampleTransformDataset(torch.utils.data.Dataset):
    """A batch dataset (``__getitems__``) whose samples go through an albumentations Compose.

    Each sample's ``image`` (k, H, W) is given to albumentations as (H, W, k) and its ``mask``
    (H, W), when the batch has one, alongside it, so geometric transforms move both together.
    Transforms must keep the sample's shape (the batch is stacked again).
    """

    def __init__(self, dataset: Any, transform: Callable[..., dict[str, Any]]) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitems__(self, indices: list[int]) -> Batch:
        batch = self.dataset.__getitems__(indices)
        images, masks = [], []
        for b in range(batch["image"].shape[0]):
            sample = {"image": batch["image"][b].permute(1, 2, 0).numpy()}
            if "mask" in batch:
                sample["mask"] = batch["mask"][b].numpy()
            out = self.transform(**sample)
            images.append(torch.from_numpy(np.ascontiguousarray(out["image"])).permute(2, 0, 1))
            if "mask" in batch:
                masks.append(torch.from_numpy(np.ascontiguousarray(out["mask"])))
        try:
            batch["image"] = torch.stack(images).contiguous()
            if masks:
                batch["mask"] = torch.stack(masks).to(torch.int64)
        except RuntimeError as error:
            raise ValueError(
                "A train_transform changed the sample's shape; batches need one shape. Use "
                f"shape-keeping transforms (flips, rotations with crop back) ({error})."
            ) from error
        return batch

    def __getitem__(self, index: int) -> Batch:
        return {key: value[0] for key, value in self.__getitems__([index]).items()}
