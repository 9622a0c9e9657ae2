"""Each TerraTorch internal the plugin relies on, removed in turn: the error names the versions.

Every touch point lives in :mod:`terratorch_hsi_peft.terratorch_compat`. These tests take away
(monkeypatch) what each one relies on and check that the run stops with
``TerraTorchIncompatibleError`` naming the tested TerraTorch versions and what differs, not with
an AttributeError somewhere inside.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from terratorch import cli_tools
from terratorch.models import encoder_decoder_factory
from terratorch.models import utils as model_utils
from terratorch.models.encoder_decoder_factory import EncoderDecoderFactory
from terratorch.models.pixel_wise_model import PixelWiseModel
from terratorch.models.scalar_output_model import ScalarOutputModel
from terratorch.tasks import ClassificationTask
from tiny_task import MODEL_ARGS, cpu_trainer, tiny_task

from terratorch_hsi_peft import terratorch_compat
from terratorch_hsi_peft.callbacks import (
    AdapterCheckpoint,
    BalancedClassWeights,
    ClassMapWriter,
    HyperspectralMetrics,
)
from terratorch_hsi_peft.datamodules import HyperspectralPatchDataModule
from terratorch_hsi_peft.datasets import HyperspectralScene
from terratorch_hsi_peft.models import (
    PEFTEncoderDecoderFactory,
    SpectralPathClassifier,
    SpectralPathModel,
)
from terratorch_hsi_peft.terratorch_compat import TESTED_VERSIONS, TerraTorchIncompatibleError

REPO_ROOT = Path(__file__).resolve().parents[1]


#: What every incompatibility message says, whatever the touch point.
VERSIONS = "tested with TerraTorch " + " and ".join(TESTED_VERSIONS)


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
    task = tiny_task()
    del task.criterion  # what configure_losses builds
    message = rf"set_loss_class_weights: ClassificationTask has no 'criterion'.*{VERSIONS}"
    with pytest.raises(TerraTorchIncompatibleError, match=message):
        cpu_trainer([BalancedClassWeights()]).fit(task, _datamodule())


PEFT_CONFIG = {"method": "KRONA", "peft_config_kwargs": {"target_modules": ["attn.q", "attn.v"]}}


def _peft_model():
    return PEFTEncoderDecoderFactory().build_model(
        "classification",
        **{k: v for k, v in MODEL_ARGS.items() if k != "num_classes"},
        num_classes=3,
        peft_config=PEFT_CONFIG,
    )


def test_freeze_backbone_when_configure_models_no_longer_calls_freeze_encoder(monkeypatch):
    monkeypatch.setattr(ClassificationTask, "configure_models", lambda self: None)
    message = rf"override_freeze_encoder: .*no longer calls model.freeze_encoder.*{VERSIONS}"
    with pytest.raises(TerraTorchIncompatibleError, match=message):
        _peft_model()


def test_freeze_backbone_when_the_model_has_no_freeze_encoder(monkeypatch):
    for cls in ScalarOutputModel.__mro__:  # the classification model and its bases
        if "freeze_encoder" in vars(cls):
            monkeypatch.delattr(cls, "freeze_encoder")
    message = rf"ScalarOutputModel has no freeze_encoder\(\).*{VERSIONS}"
    with pytest.raises(TerraTorchIncompatibleError, match=message):
        _peft_model()


def test_stock_peft_guard_without_get_peft_backbone(monkeypatch):
    monkeypatch.delattr(encoder_decoder_factory, "get_peft_backbone")
    with pytest.raises(TerraTorchIncompatibleError, match=rf"no get_peft_backbone.*{VERSIONS}"):
        terratorch_compat.guard_stock_peft(lambda original: original)


def test_stock_peft_guard_when_build_model_no_longer_calls_it(monkeypatch):
    monkeypatch.setattr(EncoderDecoderFactory, "build_model", lambda self, *a, **k: None)
    message = rf"no longer applies peft through get_peft_backbone.*{VERSIONS}"
    with pytest.raises(TerraTorchIncompatibleError, match=message):
        terratorch_compat.guard_stock_peft(lambda original: original)


@pytest.mark.parametrize("broken", ["missing", "wrong type"])
def test_metrics_callback_without_the_task_metric_collections(broken):
    task = tiny_task()
    if broken == "missing":
        del task.val_metrics  # what configure_metrics builds
        message = rf"ClassificationTask has no 'val_metrics'.*{VERSIONS}"
    else:
        task.test_metrics = torch.nn.ModuleList([torch.nn.Identity()])
        message = rf"val_metrics / test_metrics are .*Identity.*{VERSIONS}"
    with pytest.raises(TerraTorchIncompatibleError, match=message):
        cpu_trainer([HyperspectralMetrics()]).fit(task, _datamodule())


def test_callbacks_reading_the_task_model_without_it():
    task = tiny_task()
    del task.model
    with pytest.raises(TerraTorchIncompatibleError, match=rf"task_model: .*{VERSIONS}"):
        cpu_trainer([AdapterCheckpoint()]).fit(task, _datamodule())


#: Necks of tiny segmentation (PixelWiseModel) and classification (ScalarOutputModel) models.
NECKS = {
    "segmentation": [{"name": "SelectIndices", "indices": [-1]}, {"name": "ReshapeTokensToImage"}],
    "classification": [{"name": "AggregateTokens", "pooling": "mean"}],
}


def _path_model(task: str) -> torch.nn.Module:
    """A model with a spectral path, whose forward copies the stock model's."""
    args = {**MODEL_ARGS, "necks": NECKS[task]}
    return PEFTEncoderDecoderFactory().build_model(task, **args, spectral_path=4)


@pytest.mark.parametrize(
    ("task", "remove", "message"),
    [
        (
            "segmentation",
            lambda m: m.setattr(PixelWiseModel, "forward", lambda self, x: x),
            r"adopt_stock_model: PixelWiseModel.forward no longer uses \['image_size_out', "
            r"'patch_size', .*'center_crop'\], which the spectral path's copy of it runs",
        ),
        (
            "segmentation",
            lambda m: m.delattr(PixelWiseModel, "_check_for_single_channel_and_squeeze"),
            r"adopt_stock_model: PixelWiseModel has no \['_check_for_single_channel_and_squeeze",
        ),
        (
            "segmentation",
            lambda m: m.delattr(model_utils, "center_crop"),
            r"adopt_stock_model: terratorch.models.utils has no \['center_crop'\]",
        ),
        (
            "classification",
            lambda m: m.setattr(ScalarOutputModel, "forward", lambda self, x: x),
            r"ScalarOutputModel.forward no longer uses \['patch_size', 'padding', 'encoder', "
            r"'neck', 'decoder', 'head', 'pad_images'\]",
        ),
    ],
)
def test_spectral_path_without_the_stock_forward_it_copies(monkeypatch, task, remove, message):
    remove(monkeypatch)
    with pytest.raises(TerraTorchIncompatibleError, match=rf"{message}.*{VERSIONS}"):
        _path_model(task)


def test_predict_without_terratorch_custom_writer(monkeypatch):
    monkeypatch.delattr(cli_tools, "CustomWriter")
    message = rf"terratorch.cli_tools has no CustomWriter class.*{VERSIONS}"
    with pytest.raises(TerraTorchIncompatibleError, match=message):
        cpu_trainer([ClassMapWriter(file_format="npy")]).predict(tiny_task(), _datamodule())


@pytest.mark.compat
def test_every_touch_point_holds_on_the_installed_terratorch():
    model = _peft_model()  # override_freeze_encoder
    assert "freeze_encoder" in vars(model)
    terratorch_compat.restore_freeze_encoder(model)
    assert "freeze_encoder" not in vars(model)
    # guard_stock_peft ran when the plugin was imported
    assert getattr(encoder_decoder_factory.get_peft_backbone, "_refuses_plugin_methods", False)
    task = tiny_task()
    val, tests = terratorch_compat.task_metric_collections(task, "test")
    assert val is task.val_metrics and tests == list(task.test_metrics)
    assert terratorch_compat.task_model(task) is task.model
    terratorch_compat.set_loss_class_weights(task, [1.0, 2.0, 3.0], "test")
    assert task.criterion.weight.tolist() == [1.0, 2.0, 3.0]
    writer = cli_tools.CustomWriter()
    assert terratorch_compat.terratorch_writers([writer, ClassMapWriter()]) == [writer]
    # adopt_stock_model, pad_stock_input, crop_pixel_wise_output: the spectral path's forward
    for task, wrapper, shape in [
        ("segmentation", SpectralPathModel, (2, 3, 8, 8)),
        ("classification", SpectralPathClassifier, (2, 3)),
    ]:
        model = _path_model(task).eval()
        assert isinstance(model, wrapper)
        with torch.no_grad():
            assert model(torch.randn(2, 5, 8, 8)).output.shape == shape


@pytest.mark.slow  # a new interpreter imports TerraTorch (about 15 s)
def test_plugin_import_warns_when_the_stock_peft_guard_cannot_be_installed():
    # The guard only improves an error message: the plugin still imports, with a warning.
    code = (
        "from terratorch.models import encoder_decoder_factory as m\n"
        "del m.get_peft_backbone\n"
        "import terratorch_hsi_peft\n"
    )
    env = {**os.environ, "TERRATORCH_HSI_PEFT_AUTOLOAD": "0", "PYTHONWARNINGS": "default"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(rf"UserWarning: guard_stock_peft: .*{VERSIONS}", result.stderr)
    assert "fails with TerraTorch's own error" in result.stderr
