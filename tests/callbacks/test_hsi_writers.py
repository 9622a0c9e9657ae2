"""Confusion-matrix files, class-map files, and the writers' guards, without a training run."""

from __future__ import annotations

import csv
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
import torch
from lightning.pytorch import LightningModule
from terratorch.cli_tools import CustomWriter

from terratorch_hsi_peft.callbacks import ClassMapWriter, HyperspectralMetrics
from terratorch_hsi_peft.callbacks.class_map_writer import (
    _class_indices,
    _write_geotiff,
    class_colours,
    write_class_map_png,
)
from terratorch_hsi_peft.callbacks.metrics import write_confusion_matrix


def test_confusion_matrix_files(tmp_path):
    confmat = np.array([[5, 1, 0], [2, 7, 1], [0, 0, 4]])
    csv_path, png_path = write_confusion_matrix(confmat, ["a", "b", "c"], tmp_path / "cm_test")
    with csv_path.open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["true \\ predicted", "a", "b", "c"]
    assert [r[0] for r in rows[1:]] == ["a", "b", "c"]
    np.testing.assert_array_equal(np.array([r[1:] for r in rows[1:]], dtype=int), confmat)
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.part"))  # nothing half-written left behind


@pytest.mark.parametrize("num_classes", [16, 300])
def test_geotiff_holds_raw_labels_names_and_palette(tmp_path, num_classes):
    names = [f"class {i}" for i in range(num_classes)]
    raw = np.arange(1, 101).reshape(10, 10) % (num_classes + 1)
    raw = raw.astype(np.uint8 if num_classes < 255 else np.uint16)
    _write_geotiff(tmp_path / "map.tif", raw, names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(tmp_path / "map.tif") as src:
            np.testing.assert_array_equal(src.read(1), raw)
            assert src.nodata == 0 and src.tags()["class_2"] == "class 1"
            if num_classes < 255:
                colour = tuple(int(v) for v in (class_colours(num_classes)[0] * 255).round())
                assert src.colormap(1)[1] == (*colour, 255)


def test_class_map_png_with_unpredicted_pixels(tmp_path):
    class_map = np.array([[0, 1, -1], [2, 2, 1]])
    write_class_map_png(tmp_path / "map.png", class_map, ["a", "b", "c"], "toy")
    assert (tmp_path / "map.png").read_bytes()[:4] == b"\x89PNG"
    assert len(class_colours(25)) == 25 and len(np.unique(class_colours(25), axis=0)) == 25


def test_class_indices_from_every_stock_predict_output():
    indices = torch.tensor([1, 2])
    assert _class_indices(indices) is indices
    assert _class_indices((indices, None)) is indices  # ClassificationTask
    assert _class_indices(((indices, "pred"), ["f"])) is indices  # SemanticSegmentationTask
    assert _class_indices(([(indices.float(), "logits"), (indices, "pred")], None)) is indices
    with pytest.raises(ValueError, match="output_on_inference"):
        _class_indices(((indices.float(), "probabilities"), None))


def test_writer_replaces_terratorch_custom_writer_and_checks_the_datamodule():
    writer = ClassMapWriter()
    module = LightningModule()
    trainer = SimpleNamespace(
        datamodule=SimpleNamespace(paste_predictions=None),
        callbacks=[CustomWriter(write_interval="batch"), writer],
    )
    writer.setup(trainer, module, "predict")
    assert trainer.callbacks == [writer]
    keep = ClassMapWriter(replace_terratorch_writer=False)
    trainer.callbacks = [CustomWriter(), keep]
    keep.setup(trainer, module, "predict")
    assert len(trainer.callbacks) == 2
    trainer.datamodule = object()
    with pytest.raises(TypeError, match="HyperspectralPatchDataModule"):
        writer.setup(trainer, module, "predict")
    with pytest.raises(ValueError, match="file_format"):
        ClassMapWriter(file_format="png")


def test_metrics_callback_needs_a_stock_task():
    with pytest.raises(TypeError, match="ClassificationTask"):
        HyperspectralMetrics().setup(SimpleNamespace(), LightningModule(), "test")


# "3": what a dotted CLI override (--model.init_args.model_args.num_classes 3) leaves in hparams
@pytest.mark.parametrize("num_classes", [3, "3"])
def test_metrics_callback_adds_figures_once(num_classes):
    from torchmetrics import MetricCollection
    from torchmetrics.classification import MulticlassAccuracy

    module = LightningModule()
    module.save_hyperparameters({"model_args": {"num_classes": num_classes}, "ignore_index": -1})
    module.val_metrics = MetricCollection(
        {"Acc": MulticlassAccuracy(3, ignore_index=-1)}, prefix="val/"
    )
    module.test_metrics = torch.nn.ModuleList([module.val_metrics.clone(prefix="test/")])
    callback = HyperspectralMetrics()
    for _ in range(2):  # fit then test calls setup twice
        callback.setup(SimpleNamespace(), module, "fit")
    assert sorted(module.test_metrics[0].keys(keep_base=True)) == ["AA", "Acc", "Kappa", "OA"]
    module.test_metrics[0].update(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 1, -1]))
    values = module.test_metrics[0].compute()
    assert float(values["test/OA"]) == pytest.approx(2 / 3)
    assert float(values["test/AA"]) == pytest.approx((1 + 0.5) / 2)


def test_metrics_callback_on_a_task_without_num_classes_names_the_fix():
    # a pre-training run (ReconstructionTask) with the callback raised a bare KeyError 'num_classes'
    from lightning.pytorch import Trainer
    from terratorch.tasks import ReconstructionTask
    from torch.utils.data import DataLoader

    model_args = {"model": "spectralgpt_mae_vit_base", "embed_dim": 24, "depth": 1,
                  "num_heads": 2, "decoder_embed_dim": 16, "decoder_depth": 1,
                  "decoder_num_heads": 2, "img_size": 16}  # fmt: skip
    task = ReconstructionTask(model_factory="FullModelFactory", model_args=model_args)
    trainer = Trainer(
        accelerator="cpu",
        fast_dev_run=1,
        callbacks=[HyperspectralMetrics()],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    loader = DataLoader([{"image": torch.zeros(12, 16, 16)}], batch_size=1)
    with pytest.raises(ValueError, match=r"ReconstructionTask's model_args.num_classes has none\."):
        trainer.fit(task, train_dataloaders=loader)
