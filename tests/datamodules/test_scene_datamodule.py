"""HyperspectralSceneDataModule: tile grids, sparse masks, every pixel counted and stitched once."""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from terratorch_hsi_peft.datamodules import (
    IGNORE_INDEX,
    HyperspectralSceneDataModule,
    SceneTileDataset,
    tile_grid,
)
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


def _expected_tiles(dataset: SceneTileDataset, indices: list[int]) -> torch.Tensor:
    return torch.stack(
        [
            dataset.cube[:, t : t + 16, s : s + 16]
            for t, s in zip(dataset.tops[indices], dataset.lefts[indices], strict=True)
        ]
    )


@pytest.mark.parametrize("num_workers", [0, 2])
def test_batches_held_together_keep_their_tiles(num_workers):
    """Every batch a map hands out keeps its tiles while the loader cuts the next ones, also
    from DataLoader worker processes."""
    dm = _module(_scene(), batch_size=3, num_workers=num_workers)
    held = list(dm.predict_dataloader())  # every batch held at once
    dataset = dm.predict_dataset
    assert len(held) >= 4
    for index, batch in enumerate(held):
        indices = list(range(3 * index, min(3 * index + 3, len(dataset))))
        assert torch.equal(batch["image"], _expected_tiles(dataset, indices))
    # A second map of the same datamodule leaves the first one's batches alone.
    list(dm.predict_dataloader())
    for index, batch in enumerate(held):
        indices = list(range(3 * index, min(3 * index + 3, len(dataset))))
        assert torch.equal(batch["image"], _expected_tiles(dataset, indices))


@pytest.mark.parametrize("take", ["untyped_storage", "storage"])
def test_a_storage_a_consumer_took_is_never_overwritten(take):
    """A consumer that keeps only a batch's storage (``untyped_storage()`` / ``storage()``, no
    tensor) still reads the tiles it was given after later batches are cut (issue 31: a reused
    buffer read 2.0 where 1.0 was written)."""
    dm = _module(_scene(), batch_size=3)
    kept = []
    with warnings.catch_warnings():  # TypedStorage is deprecated; consumers still call it
        warnings.simplefilter("ignore", UserWarning)
        for batch in dm.predict_dataloader():
            image = batch["image"]
            kept.append((getattr(image, take)(), image.size(), image.stride(), image.clone()))
            del batch, image  # only the storage is left
        list(dm.predict_dataloader())  # and another map
        assert len(kept) >= 4
        for storage, size, stride, expected in kept:
            again = torch.empty(0, dtype=expected.dtype).set_(storage, 0, size, stride)
            assert torch.equal(again, expected)


def _hold_until_done(received: mp.Queue, acks: mp.Queue, digests: mp.Queue) -> None:
    """A consumer process: hold every batch it is sent, then report each one's bytes."""
    held = []
    while (image := received.get()) is not None:
        held.append(image)
        acks.put(len(held))
    digests.put([hashlib.sha256(image.numpy().tobytes()).hexdigest() for image in held])


def test_batches_sent_to_another_process_are_never_overwritten():
    """Batches moved to shared memory and sent through a ``torch.multiprocessing`` queue keep
    their tiles in the receiving process while the loader cuts the next ones (issue 31: 18 of
    21 sent batches changed)."""
    context = mp.get_context("fork")
    received, acks, digests = context.Queue(), context.Queue(), context.Queue()
    consumer = context.Process(target=_hold_until_done, args=(received, acks, digests))
    consumer.start()
    try:
        dm = _module(_scene(), batch_size=3)
        expected = []
        for _ in range(2):  # two maps
            for batch in dm.predict_dataloader():
                image = batch["image"].share_memory_()
                expected.append(hashlib.sha256(image.numpy().tobytes()).hexdigest())
                received.put(image)
                assert acks.get(timeout=60) == len(expected)  # the consumer holds it now
                del batch, image
        received.put(None)
        assert digests.get(timeout=60) == expected
        assert len(expected) >= 8
    finally:
        consumer.join(timeout=60)
        if consumer.is_alive():
            consumer.kill()
    assert consumer.exitcode == 0


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


DISJOINT = {
    "protocol": "spatially_disjoint",
    "block_size": 8,
    "test_fraction": 0.4,
    "val_fraction": 0.25,
    "seed": 0,
}


def _training_tiles(dm: HyperspectralSceneDataModule) -> tuple[SceneTileDataset, torch.Tensor]:
    dataset = dm._make_dataset("train")
    return dataset, dataset.__getitems__(list(range(len(dataset))))["image"]


@pytest.mark.parametrize(
    ("split", "hide", "expected"),
    [
        (DISJOINT, None, "blocks"),  # the default for spatially_disjoint
        (DISJOINT, False, "nothing"),
        ({"protocol": "per_class", "train_size": 0.3, "val_size": 0.2}, None, "nothing"),
        ({"protocol": "per_class", "train_size": 0.3, "val_size": 0.2}, True, "pixels"),
    ],
)
def test_training_tiles_hide_held_out_blocks_brute_force(split, hide, expected):
    """Pixel by pixel: a training tile shows a pixel's own spectrum unless it is held out."""
    scene = _scene(height=48, width=45)
    dm = _module(scene, split={**split, "seed": 0}, train_stride=4, hide_held_out=hide)
    dataset, images = _training_tiles(dm)
    routed = dm.routed_cube()
    height, width = scene.shape
    held_out = np.concatenate([dm.split.val, dm.split.test])
    if expected == "blocks":  # every block holding a validation or test pixel, found one by one
        blocks = {(p // width // 8, p % width // 8) for p in held_out.tolist()}
        hidden = np.array(
            [[(r // 8, c // 8) in blocks for c in range(width)] for r in range(height)]
        )
    else:
        hidden = np.zeros(height * width, dtype=bool)
        hidden[held_out] = expected == "pixels"
        hidden = hidden.reshape(height, width)
    train = dm.split.train
    mean = routed[:, train // width, train % width].mean(dim=1)
    held_out_raster = np.zeros(height * width, dtype=bool)
    held_out_raster[held_out] = True
    held_out_raster = held_out_raster.reshape(height, width)
    held_out_in_tiles = 0
    for top, left, image in zip(dataset.tops.tolist(), dataset.lefts.tolist(), images, strict=True):
        window = (slice(top, top + 16), slice(left, left + 16))
        held_out_in_tiles += int(held_out_raster[window].sum())
        hidden_here = torch.from_numpy(hidden[window])
        shown = torch.where(hidden_here, mean[:, None, None], routed[:, window[0], window[1]])
        torch.testing.assert_close(image, shown, rtol=0, atol=0)
    assert held_out_in_tiles > 0  # training tiles do cover held-out pixels: hiding is tested
    assert hidden.any() == (expected != "nothing")
    if expected == "blocks":  # no training pixel is hidden (the split keeps them apart)
        assert not hidden.ravel()[train].any()
    for stage in ("val", "test"):  # evaluation tiles show the scene as it is
        dataset = dm._make_dataset(stage)
        image = dataset[0]["image"]
        top, left = int(dataset.tops[0]), int(dataset.lefts[0])
        torch.testing.assert_close(image, routed[:, top : top + 16, left : left + 16])


def test_hide_held_out_must_be_a_bool():
    with pytest.raises(ValueError, match="hide_held_out must be true, false or null"):
        _module(_scene(), hide_held_out="yes")


def test_appended_spectra_follow_the_routed_bands_and_are_hidden_with_them():
    """append_spectra: tiles carry routed bands then every z-scored band; held-out blocks are
    hidden in both, so no held-out spectrum reaches training through the spectral path."""
    scene = _scene(height=48, width=45)
    dm = _module(
        scene,
        split={**DISJOINT, "seed": 0},
        band_route="pca",
        num_components=3,
        append_spectra=True,
    )
    assert (dm.num_bands, dm.num_spectra) == (3, 6)
    cube = dm.routed_cube()
    assert cube.shape == (9, 48, 45)
    pixels = scene.image.reshape(-1, 6)
    train = pixels[dm.split.train]
    zscore = (pixels - train.mean(0)) / train.std(0)
    torch.testing.assert_close(
        cube[3:].reshape(6, -1).T, torch.from_numpy(zscore).float(), rtol=0, atol=1e-5
    )
    dataset, images = _training_tiles(dm)
    hidden = torch.from_numpy(dm.held_out_mask())
    assert hidden.any()
    for top, left, image in zip(dataset.tops.tolist(), dataset.lefts.tolist(), images, strict=True):
        here = hidden[top : top + 16, left : left + 16]
        spectra = image[3:][:, here]  # every hidden pixel shows one and the same spectrum
        if spectra.numel():
            torch.testing.assert_close(spectra, spectra[:, :1].expand_as(spectra))
    assert dm._make_dataset("test")[0]["image"].shape[0] == 9
