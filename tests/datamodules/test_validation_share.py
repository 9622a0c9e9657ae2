"""A user's own config gets a validation share by default; ``val_size: 0`` turns it off quietly.

Issue 32: only the shipped configs held out validation pixels (``val_size: 0.1``), so a user's
config without it ran every fit with an empty validation loader, and Lightning warned "Total
length of DataLoader across ranks is zero". Both routes are run through the real ``terratorch``
command with warnings shown.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from terratorch_cli import terratorch
from tiny_task import MODEL_ARGS

from terratorch_hsi_peft.datamodules import (
    HyperspectralPatchDataModule,
    HyperspectralPretrainDataModule,
    HyperspectralSceneDataModule,
)
from terratorch_hsi_peft.datamodules.scene_state import VALIDATION_SHARE
from terratorch_hsi_peft.datasets import HyperspectralScene, make_split


def _config(folder: Path, split: dict) -> dict:
    """A user's own config: a one-epoch CPU fit of the tiny model on a synthetic scene."""
    return {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "max_epochs": 1,
            "num_sanity_val_steps": 0,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": f"{folder}/logs", "name": "run", "version": 0},
            },
            "default_root_dir": f"{folder}/run",
        },
        "data": {
            "class_path": "terratorch_hsi_peft.datamodules.HyperspectralPatchDataModule",
            "init_args": {
                "scene": "generic",
                "root": str(folder),
                "scene_options": {
                    "image_path": "cube.npy",
                    "label_path": "labels.npy",
                    "name": "synthetic",
                },
                "split": split,
                "band_route": "pca",
                "num_components": 3,
                "patch_size": 3,
                "img_size": 8,
                "batch_size": 512,
            },
        },
        "model": {
            "class_path": "terratorch.tasks.ClassificationTask",
            "init_args": {
                "model_factory": "EncoderDecoderFactory",
                "model_args": {**MODEL_ARGS, "backbone_num_bands": 3},
            },
        },
    }


EMPTY_LOADER = "across ranks is zero"


def _labels(size: int = 24) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 4, size=(size, size))


def _fit(folder: Path, split: dict) -> tuple[str, list[dict[str, str]], dict]:
    """A one-epoch fit of a user's config; its output, logged rows and datamodule state."""
    labels = _labels()
    np.save(folder / "cube.npy", np.random.default_rng(1).normal(size=(*labels.shape, 5)))
    np.save(folder / "labels.npy", labels)
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump(_config(folder, split)))
    output = terratorch(["fit", "-c", config], warnings="default")
    with open(folder / "logs/run/version_0/metrics.csv") as file:
        rows = list(csv.DictReader(file))
    (checkpoint,) = folder.rglob("*.ckpt")
    state = torch.load(checkpoint, weights_only=True)["HyperspectralPatchDataModule"]
    return output, rows, state


@pytest.mark.slow  # runs the terratorch command twice (about 30 s each)
def test_a_user_config_without_val_size_validates_without_the_empty_loader_warning(tmp_path):
    output, rows, state = _fit(tmp_path, {"protocol": "per_class", "seed": 0, "train_size": 0.3})
    assert EMPTY_LOADER not in output
    expected = make_split(_labels(), "per_class", 0, train_size=0.3, val_size=0.1)
    assert torch.equal(state["split"]["val"], torch.from_numpy(expected.val))
    assert len(expected.val) > 0
    losses = [float(row["val/loss"]) for row in rows if row.get("val/loss")]
    assert len(losses) == 1 and math.isfinite(losses[0])


@pytest.mark.slow
def test_val_size_zero_skips_the_validation_loop_quietly(tmp_path):
    split = {"protocol": "per_class", "seed": 0, "train_size": 0.3, "val_size": 0}
    output, rows, state = _fit(tmp_path, split)
    assert EMPTY_LOADER not in output
    assert len(state["split"]["val"]) == 0
    assert not any(row.get("val/loss") for row in rows)
    assert any(row.get("train/Accuracy") for row in rows)  # it trained


def _scene() -> HyperspectralScene:
    labels = _labels(48)
    image = np.random.default_rng(2).normal(size=(*labels.shape, 5))
    return HyperspectralScene(image, labels, class_names=["a", "b", "c"])


@pytest.mark.filterwarnings("ignore:Spatially disjoint split")  # small blocks miss classes
@pytest.mark.parametrize("cls", [HyperspectralPatchDataModule, HyperspectralSceneDataModule])
@pytest.mark.parametrize("protocol", sorted(VALIDATION_SHARE))
def test_every_protocol_holds_out_validation_pixels_by_default(cls, protocol):
    options = {"block_size": 8} if protocol == "spatially_disjoint" else {}
    split = cls(scene=_scene(), split={"protocol": protocol, **options}).split
    assert len(split.val) > 0
    assert split.params | VALIDATION_SHARE[protocol] == split.params  # recorded as drawn
    off = {"val_size": 0} if protocol == "per_class" else {"val_fraction": 0.0}
    assert len(cls(scene=_scene(), split={"protocol": protocol, **options, **off}).split.val) == 0


def test_the_pretraining_scene_split_has_the_same_default_as_fine_tuning():
    scene = _scene()
    split = {"protocol": "per_class", "train_size": 0.3}
    pretrain = HyperspectralPretrainDataModule(
        [{"scene": scene, "split": split, "leave_out_test": False}],
        band_route="pca",
        num_components=3,
        window_size=16,
    )
    finetune = HyperspectralPatchDataModule(
        scene=scene, split=split, band_route="pca", num_components=3
    )
    assert np.array_equal(pretrain.sources[0].split().val, finetune.split.val)
    assert len(finetune.split.val) > 0
    assert torch.equal(pretrain.routes[0].matrix, finetune.route.matrix)


def test_a_fit_without_validation_samples_turns_the_validation_loop_off():
    pretrain = HyperspectralPretrainDataModule([{"scene": _scene()}], window_size=16)
    per_class = {"protocol": "per_class", "val_size": 0}
    for dm, stage in (
        (pretrain, "fit"),
        (HyperspectralPatchDataModule(scene=_scene(), split=per_class), "fit"),
    ):
        dm.trainer = SimpleNamespace(limit_val_batches=1.0, lightning_module=None)
        dm.setup(stage)
        assert dm.trainer.limit_val_batches == 0
    shared = HyperspectralPatchDataModule(scene=_scene())  # the default share: validation stays
    shared.trainer = SimpleNamespace(limit_val_batches=1.0, lightning_module=None)
    shared.setup("fit")
    assert shared.trainer.limit_val_batches == 1.0
