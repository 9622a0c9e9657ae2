"""Each TerraTorch internal the plugin relies on, removed in turn: the error names the versions.

Every touch point lives in :mod:`terratorch_hsi_peft.terratorch_compat`. These tests take away
(monkeypatch) what each one relies on and check that the run stops with
``TerraTorchIncompatibleError`` naming the tested TerraTorch versions and what differs, not with
an AttributeError somewhere inside.
"""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pytest
from lightning import Trainer
from terratorch.tasks import ClassificationTask

from terratorch_hsi_peft import terratorch_compat
from terratorch_hsi_peft.callbacks import BalancedClassWeights
from terratorch_hsi_peft.datamodules import HyperspectralPatchDataModule
from terratorch_hsi_peft.datasets import HyperspectralScene
from terratorch_hsi_peft.terratorch_compat import TESTED_VERSIONS, TerraTorchIncompatibleError

MODEL_ARGS = {
    "backbone": "spectralgpt_vit_base",
    "backbone_depth": 1,
    "backbone_embed_dim": 16,
    "backbone_num_heads": 2,
    "backbone_num_bands": 5,
    "backbone_img_size": 8,
    "backbone_out_indices": [-1],
    "decoder": "IdentityDecoder",
    "num_classes": 3,
}

#: What every incompatibility message says, whatever the touch point.
VERSIONS = "tested with TerraTorch " + " and ".join(TESTED_VERSIONS)


def _task(**kwargs) -> ClassificationTask:
    return ClassificationTask(
        model_factory="EncoderDecoderFactory", model_args=MODEL_ARGS, **kwargs
    )


def _trainer(callbacks: list) -> Trainer:
    return Trainer(
        accelerator="cpu",
        max_steps=1,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def _datamodule() -> HyperspectralPatchDataModule:
    rng = np.random.default_rng(0)
    scene = HyperspectralScene(
        rng.normal(size=(12, 12, 5)), rng.integers(1, 4, size=(12, 12)), class_names=list("abc")
    )
    return HyperspectralPatchDataModule(
        scene=scene, band_route="standardize", patch_size=3, img_size=8
    )


def test_version_is_read_from_the_installed_distribution():
    assert terratorch_compat.terratorch_version() == importlib.metadata.version("terratorch")


def test_class_weights_without_the_task_criterion():
    task = _task()
    del task.criterion  # what configure_losses builds
    message = rf"set_loss_class_weights: ClassificationTask has no 'criterion'.*{VERSIONS}"
    with pytest.raises(TerraTorchIncompatibleError, match=message):
        _trainer([BalancedClassWeights()]).fit(task, _datamodule())
