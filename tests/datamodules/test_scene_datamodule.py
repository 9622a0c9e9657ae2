"""HyperspectralSceneDataModule: tile grids, sparse masks, every pixel counted and stitched once."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from terratorch_hsi_peft.datamodules import IGNORE_INDEX, HyperspectralSceneDataModule, tile_grid
from terratorch_hsi_peft.datasets import HyperspectralScene


def _scene(height: int = 40, width: int = 37, bands: int = 6) -> HyperspectralScene:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(height, width, bands))
    labels = rng.integers(0, 4, size=(height, width))
    return HyperspectralScene(image, labels, class_names=["a", "b", "c"], name="tiles")


def _module(scene: HyperspectralScene, **kwargs) -> HyperspectralSceneDataModule:
    options = {
        "split": {"protocol": "per_class", "seed": 0, "train_size": 0.3, "val_size": 0.2},
        "band_route": "standardize",
        "tile_size": 16,
        **kwargs,
    }
    return HyperspectralSceneDataModule(scene=scene, **options)


@pytest.mark.parametrize(("length", "tile", "stride"), [(40, 16, 8), (37, 16, 16), (16, 16, 8)])
def test_tile_grid_owns_every_position_once(length, tile, stride):
    starts, lo, hi = tile_grid(length, tile, stride)
    assert starts[0] == 0 and starts[-1] == length - tile
    owned = np.concatenate(
        [np.arange(s + a, s + b) for s, a, b in zip(starts, lo, hi, strict=True)]
    )
    np.testing.assert_array_equal(np.sort(owned), np.arange(length))
    assert np.all((lo >= 0) & (hi <= tile))


def test_tile_grid_owner_is_the_nearest_centre():
    starts, lo, hi = tile_grid(40, 16, 8)
    centres = starts + 7.5
    for s, a, b in zip(starts, lo, hi, strict=True):
        for x in range(s + a, s + b):
            assert abs(x - (s + 7.5)) == np.abs(x - centres).min()


@pytest.mark.parametrize("stage", ["val", "test"])
def test_eval_masks_hold_each_subset_pixel_exactly_once(stage):
    scene = _scene()
    dm = _module(scene)
    dataset = dm._make_dataset(stage)
    batch = dataset.__getitems__(list(range(len(dataset))))
    width = scene.shape[1]
    seen = []
    for top, left, mask in zip(dataset.tops, dataset.lefts, batch["mask"], strict=True):
        rows, cols = torch.nonzero(mask != IGNORE_INDEX, as_tuple=True)
        pixels = (rows + top) * width + cols + left
        np.testing.assert_array_equal(mask[rows, cols].numpy(), dm.targets(pixels.numpy()))
        seen.append(pixels)
    seen = torch.cat(seen).sort().values.numpy()
    np.testing.assert_array_equal(seen, getattr(dm.split, stage))


def test_training_tiles_are_labelled_at_training_pixels_only():
    scene = _scene()
    dm = _module(scene)
    dataset = dm._make_dataset("train")
    batch = dataset.__getitems__(list(range(len(dataset))))
    assert batch["image"].shape[1:] == (6, 16, 16) and batch["mask"].dtype == torch.int64
    width = scene.shape[1]
    labelled = set()
    for top, left, mask, image in zip(
        dataset.tops, dataset.lefts, batch["mask"], batch["image"], strict=True
    ):
        rows, cols = torch.nonzero(mask != IGNORE_INDEX, as_tuple=True)
        labelled |= set(((rows + top) * width + cols + left).tolist())
        routed = dm.routed_cube()[:, top : top + 16, left : left + 16]
        torch.testing.assert_close(image, routed)
    assert labelled == set(dm.split.train.tolist())


def test_predict_tiles_stitch_back_into_the_whole_scene():
    scene = _scene()
    dm = _module(scene)
    dataset = dm._make_dataset("predict")
    truth = np.random.default_rng(3).integers(0, 3, scene.shape)
    tiles = torch.stack(
        [
            torch.from_numpy(truth[t : t + 16, s : s + 16])
            for t, s in zip(dataset.tops, dataset.lefts, strict=True)
        ]
    )
    class_map = np.full(scene.shape, -1)
    dataset.paste(class_map, list(range(len(dataset))), tiles)
    np.testing.assert_array_equal(class_map, truth)
    with pytest.raises(ValueError, match="output_on_inference"):
        dataset.paste(class_map, [0], tiles[:, 0])


def test_scene_smaller_than_a_tile_is_reflect_padded_and_cropped_back():
    scene = _scene(height=12, width=10)
    dm = _module(scene)
    dataset = dm._make_dataset("predict")
    assert len(dataset) == 1 and dataset[0]["image"].shape == (6, 16, 16)
    class_map = np.full(scene.shape, -1)
    dataset.paste(class_map, [0], torch.arange(256).reshape(1, 16, 16))
    np.testing.assert_array_equal(class_map, np.arange(256).reshape(16, 16)[:12, :10])


def test_bad_strides_are_explained():
    with pytest.raises(ValueError, match="must not exceed tile_size"):
        _module(_scene(), train_stride=20)
    with pytest.raises(ValueError, match="more than twice"):
        _module(_scene(height=6, width=6))._make_dataset("predict")
