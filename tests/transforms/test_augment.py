"""Training transforms: TerraTorch-style ``train_transform`` lists in both datamodules.

A synthetic scene whose first band *is* the label (band route ``none`` keeps the values) shows
alignment directly: after any geometric transform, band 0 must still equal mask + 1 (tiles) or
the centre must still carry the label (patches).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lightning import LightningModule, Trainer

from terratorch_hsi_peft.datamodules import (
    IGNORE_INDEX,
    HyperspectralPatchDataModule,
    HyperspectralSceneDataModule,
)
from terratorch_hsi_peft.datasets import HyperspectralScene
from terratorch_hsi_peft.transforms import RandomFlipRotate, SpectralJitter, split_train_transform

FLIPS = {"class_path": "terratorch_hsi_peft.transforms.RandomFlipRotate", "init_args": {"p": 0.5}}
ALBUMENTATIONS = [
    {"class_path": "albumentations.HorizontalFlip", "init_args": {"p": 0.5}},
    {"class_path": "albumentations.RandomRotate90", "init_args": {"p": 0.5}},
    {"class_path": "albumentations.pytorch.transforms.ToTensorV2"},
]


def _scene(height: int = 40, width: int = 36) -> HyperspectralScene:
    rng = np.random.default_rng(0)
    labels = rng.integers(1, 5, size=(height, width))
    image = rng.normal(size=(height, width, 3))
    image[..., 0] = labels  # band 0 carries the label
    return HyperspectralScene(image, labels, class_names=list("abcd"), name="aligned")


def _tiles(transform: list | None) -> HyperspectralSceneDataModule:
    return HyperspectralSceneDataModule(
        scene=_scene(),
        split={"protocol": "per_class", "seed": 0, "train_size": 0.5, "val_size": 0.2},
        band_route="none",
        tile_size=16,
        batch_size=4,
        train_transform=transform,
    )


def _patches(transform: list | None) -> HyperspectralPatchDataModule:
    return HyperspectralPatchDataModule(
        scene=_scene(),
        split={"protocol": "per_class", "seed": 0, "train_size": 0.5, "val_size": 0.2},
        band_route="none",
        patch_size=5,
        img_size=5,  # no resize: the centre value stays exact
        batch_size=16,
        train_transform=transform,
    )


class _Recorder(LightningModule):
    """Keeps every batch the model receives, per stage; learns nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: dict[str, list[dict[str, torch.Tensor]]] = {"train": [], "val": []}

    def training_step(self, batch, batch_idx):
        self.seen["train"].append({k: v.clone() for k, v in batch.items()})
        return self.weight.sum() * 0

    def validation_step(self, batch, batch_idx):
        self.seen["val"].append({k: v.clone() for k, v in batch.items()})

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(datamodule) -> _Recorder:
    model = _Recorder()
    torch.manual_seed(0)
    Trainer(
        accelerator="cpu",
        max_steps=2,
        limit_val_batches=2,
        num_sanity_val_steps=0,
        val_check_interval=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    ).fit(model, datamodule=datamodule)
    return model


@pytest.mark.parametrize("transform", [[FLIPS], ALBUMENTATIONS], ids=["batch", "albumentations"])
def test_tile_image_and_mask_stay_aligned_and_evaluation_is_untouched(transform):
    datamodule = _tiles(transform)
    model = _fit(datamodule)
    reference = _tiles(None)
    train_batches = reference._make_dataset("train")
    changed = False
    for batch in model.seen["train"]:
        labelled = batch["mask"] != IGNORE_INDEX
        assert labelled.any()
        torch.testing.assert_close(
            batch["image"][:, 0][labelled], (batch["mask"][labelled] + 1).float()
        )
        # Some tile differs from every untransformed training tile.
        changed |= any(
            not any(torch.equal(tile, train_batches[i]["image"]) for i in range(len(train_batches)))
            for tile in batch["image"]
        )
    assert changed, "no training tile was transformed"
    val = reference._make_dataset("val")
    expected = val.__getitems__(list(range(len(val))))
    got = model.seen["val"]
    assert len(got) == 2
    torch.testing.assert_close(got[0]["image"], expected["image"][:4])
    torch.testing.assert_close(got[0]["mask"], expected["mask"][:4])


def test_patch_centres_keep_their_label_and_evaluation_is_untouched():
    jitter = {"class_path": "terratorch_hsi_peft.transforms.SpectralJitter"}
    # No gain: the centre value stays exactly the label.
    transform = [*ALBUMENTATIONS[:2], FLIPS, {**jitter, "init_args": {"gain_std": 0.0}}]
    datamodule = _patches(transform)
    model = _fit(datamodule)
    reference = _patches(None)
    originals = reference._make_dataset("train")
    flipped = 0
    for batch in model.seen["train"]:
        torch.testing.assert_close(batch["image"][:, 0, 2, 2], (batch["label"] + 1).float())
        dataset_batch = originals.__getitems__(list(range(len(originals))))
        for image in batch["image"]:
            match = (dataset_batch["image"] == image).flatten(1).all(1).any()
            flipped += int(not match)
    assert flipped > 0, "no training patch was transformed"
    val = reference._make_dataset("val")
    expected = val.__getitems__(list(range(16)))
    torch.testing.assert_close(model.seen["val"][0]["image"], expected["image"])
    torch.testing.assert_close(model.seen["val"][0]["label"], expected["label"])


def test_flip_rotate_draws_the_eight_symmetries_of_the_square():
    torch.manual_seed(0)
    image = torch.arange(9.0).reshape(1, 1, 3, 3).repeat(400, 1, 1, 1)
    mask = image[:, 0].long()
    out = RandomFlipRotate(p=0.5)({"image": image.clone(), "mask": mask.clone()})
    torch.testing.assert_close(out["image"][:, 0].long(), out["mask"])
    base = image[0, 0]
    symmetries = [torch.rot90(base, k, (0, 1)) for k in range(4)]
    symmetries += [s.flip(-1) for s in symmetries]
    counts = [int((out["image"][:, 0] == s).flatten(1).all(1).sum()) for s in symmetries]
    assert sum(counts) == 400  # every output is a symmetry of the input
    assert min(counts) > 25  # and each of the eight occurs (50 expected)
    assert torch.all(out["image"][:, 0, 1, 1] == 4)  # the centre stays the centre


def test_batch_transforms_stay_on_the_batch_device_and_dtype():
    batch = {"image": torch.randn(4, 3, 6, 6, dtype=torch.float64)}
    out = SpectralJitter(gain_std=0.1, noise_std=0.1)(RandomFlipRotate()(batch))
    assert out["image"].dtype == torch.float64 and out["image"].device.type == "cpu"


@pytest.mark.parametrize(
    ("transforms", "error", "match"),
    [
        ([FLIPS, ALBUMENTATIONS[0]], ValueError, "list them before RandomFlipRotate"),
        ([{"class_path": "torch.nn.Identity"}], TypeError, "give albumentations transforms"),
        ([{"class_path": "albumentations.NoSuchFlip"}], ValueError, "cannot be imported"),
        ([{"init_args": {"p": 1}}], ValueError, "has no class_path"),
        ({"class_path": "albumentations.HorizontalFlip"}, TypeError, "must be a list"),
    ],
)
def test_bad_train_transform_lists_are_refused_with_the_fix(transforms, error, match):
    with pytest.raises(error, match=match):
        split_train_transform(transforms)


def test_bad_transform_parameters_are_refused():
    with pytest.raises(ValueError, match=r"p=1.5 must lie in \[0, 1\]"):
        RandomFlipRotate(p=1.5)
    with pytest.raises(ValueError, match="must be >= 0"):
        SpectralJitter(gain_std=-0.1)


def test_shape_changing_albumentations_are_refused_with_the_fix():
    scale = {"class_path": "albumentations.RandomScale", "init_args": {"scale_limit": 0.5, "p": 1}}
    loader = _tiles([scale]).train_dataloader()
    with pytest.raises(ValueError, match="changed the sample's shape"):
        next(iter(loader))
