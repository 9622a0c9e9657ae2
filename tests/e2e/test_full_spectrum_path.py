"""append_spectra + spectral_path.bands through the stock tasks: both formulations train, test,
save the appended route in their checkpoint and predict a scene from it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from terratorch.tasks import ClassificationTask, SemanticSegmentationTask
from tiny_task import cpu_trainer

from terratorch_hsi_peft.datamodules import (
    IGNORE_INDEX,
    HyperspectralPatchDataModule,
    HyperspectralSceneDataModule,
)
from terratorch_hsi_peft.datasets import HyperspectralScene
from terratorch_hsi_peft.models import SpectralPathClassifier, SpectralPathModel

BANDS = 7
BACKBONE = {
    "backbone": "spectralgpt_vit_base",
    "backbone_depth": 1,
    "backbone_embed_dim": 16,
    "backbone_num_heads": 2,
    "backbone_num_bands": 3,  # num_components
    "backbone_img_size": 8,
    "backbone_patch_size": 4,
    "num_classes": 3,
    "spectral_path": {"width": 8, "bands": BANDS},
    "peft_config": {
        "method": "KRONA",
        "peft_config_kwargs": {"target_modules": ["attn.q", "attn.v"]},
    },
}


def _scene() -> HyperspectralScene:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=(24, 24))
    return HyperspectralScene(rng.normal(size=(24, 24, BANDS)), labels, class_names=list("abc"))


def _task(formulation: str) -> ClassificationTask | SemanticSegmentationTask:
    if formulation == "classification":
        model_args = {
            **BACKBONE,
            "backbone_out_indices": [-1],
            "necks": [{"name": "AggregateTokens", "pooling": "mean"}],
            "decoder": "IdentityDecoder",
        }
        return ClassificationTask(model_factory="PEFTEncoderDecoderFactory", model_args=model_args)
    model_args = {
        **BACKBONE,
        "necks": [{"name": "SelectIndices", "indices": [0]}, {"name": "ReshapeTokensToImage"}],
        "decoder": "FCNDecoder",
    }
    return SemanticSegmentationTask(
        model_factory="PEFTEncoderDecoderFactory",
        model_args=model_args,
        loss="ce",
        ignore_index=IGNORE_INDEX,
        plot_on_val=False,
    )


def _datamodule(formulation: str, **kwargs):
    common = {
        "scene": _scene(),
        "split": {"protocol": "per_class", "seed": 0, "train_size": 0.3, "val_size": 0.1},
        "band_route": "pca",
        "num_components": 3,
        "append_spectra": True,
        **kwargs,
    }
    if formulation == "classification":
        return HyperspectralPatchDataModule(patch_size=5, img_size=8, batch_size=32, **common)
    return HyperspectralSceneDataModule(tile_size=8, batch_size=4, **common)


@pytest.mark.parametrize(
    ("formulation", "wrapper"),
    [("classification", SpectralPathClassifier), ("segmentation", SpectralPathModel)],
)
def test_full_spectrum_path_trains_tests_and_predicts_from_its_checkpoint(
    formulation, wrapper, tmp_path
):
    torch.manual_seed(0)
    task = _task(formulation)
    assert isinstance(task.model, wrapper)
    trainer = cpu_trainer([], max_steps=3)
    datamodule = _datamodule(formulation)
    trainer.fit(task, datamodule=datamodule)
    assert trainer.global_step == 3
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["image"].shape[1] == 3 + BANDS
    (metrics,) = trainer.test(task, datamodule=datamodule, verbose=False)
    assert np.isfinite(metrics["test/loss"])
    # The checkpoint carries the appended route: a fresh datamodule predicts with it.
    checkpoint = tmp_path / "run.ckpt"
    trainer.save_checkpoint(checkpoint)
    fresh = _datamodule(formulation, split={"protocol": "per_class", "seed": 1, "train_size": 0.5})
    predictions = trainer.predict(task, datamodule=fresh, ckpt_path=checkpoint)
    assert fresh.route.spectra == BANDS and fresh.num_spectra == BANDS
    assert len(predictions) > 0
