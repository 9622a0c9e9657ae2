"""Both datamodules through stock TerraTorch tasks on the real Indian Pines scene.

A tiny SpectralGPT (one block, 16 channels) keeps the runs short; what is checked is the wiring:
YAML parsing, restored band-route statistics, metrics, confusion matrices and full-scene maps.
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from lightning import Trainer
from terratorch.cli_tools import build_lightning_cli
from terratorch.tasks import SemanticSegmentationTask
from terratorch_cli import terratorch

from terratorch_hsi_peft.callbacks import ClassMapWriter, HyperspectralMetrics
from terratorch_hsi_peft.datamodules import (
    HyperspectralPatchDataModule,
    HyperspectralSceneDataModule,
)

pytestmark = pytest.mark.slow

PATCH_CONFIG = """\
seed_everything: 0
trainer:
  accelerator: cpu
  devices: 1
  max_steps: 3
  limit_val_batches: 1
  num_sanity_val_steps: 0
  enable_progress_bar: false
  default_root_dir: {run}
  callbacks:
    - class_path: terratorch_hsi_peft.callbacks.HyperspectralMetrics
    - class_path: terratorch_hsi_peft.callbacks.BalancedClassWeights
    - class_path: terratorch_hsi_peft.callbacks.ClassMapWriter
      init_args:
        output_dir: {maps}
        replace_terratorch_writer: {replace}
data:
  class_path: terratorch_hsi_peft.datamodules.HyperspectralPatchDataModule
  init_args:
    scene: indian_pines
    root: {root}
    split: {{protocol: per_class, seed: 0, train_size: 0.1, val_size: 0.1}}
    band_route: pca
    num_components: 3
    patch_size: 5
    img_size: 8
    batch_size: 1024
model:
  class_path: terratorch.tasks.ClassificationTask
  init_args:
    model_factory: EncoderDecoderFactory
    lr: 1.0e-3
    model_args:
      backbone: spectralgpt_vit_base
      backbone_depth: 1
      backbone_embed_dim: 16
      backbone_num_heads: 2
      backbone_num_bands: 3
      backbone_img_size: 8
      backbone_out_indices: [-1]
      decoder: IdentityDecoder
      num_classes: 16
"""


def _config(folder: Path, root: Path, replace: bool = True) -> Path:
    path = folder / f"patch_{'replace' if replace else 'keep'}.yaml"
    text = PATCH_CONFIG.format(
        run=folder / "run", maps=folder / "maps", root=root, replace=str(replace).lower()
    )
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def patch_fit(tmp_path_factory, shared_data):
    """One `fit` through the real CLI (in-process): the config and its training checkpoint."""
    folder = tmp_path_factory.mktemp("patch")
    config = _config(folder, shared_data / "indian_pines")
    cli = build_lightning_cli(["fit", "-c", str(config)])
    assert cli.trainer.global_step == 3
    assert "val/Kappa" in cli.trainer.callback_metrics
    # BalancedClassWeights, named in the config, weighted the loss by the training counts.
    weights = cli.model.criterion.weight.cpu().numpy()
    np.testing.assert_allclose(weights, cli.datamodule.class_weight_values(), rtol=1e-6)
    checkpoint = Path(cli.trainer.checkpoint_callback.best_model_path)
    return {"folder": folder, "config": config, "checkpoint": checkpoint, "root": shared_data}


def test_test_in_a_new_run_restores_the_training_statistics(patch_fit):
    checkpoint = patch_fit["checkpoint"]
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    saved = saved["HyperspectralPatchDataModule"]
    # Another split seed would fit other statistics; the checkpoint's must win.
    args = ["test", "-c", str(patch_fit["config"]), "--ckpt_path", str(checkpoint)]
    with pytest.warns(UserWarning, match="replaces the configured one"):
        cli = build_lightning_cli([*args, "--data.init_args.split.seed", "7"])
    route = cli.datamodule.route
    torch.testing.assert_close(route.matrix, saved["band_route"]["matrix"])
    torch.testing.assert_close(route.mean, saved["band_route"]["mean"])
    np.testing.assert_array_equal(cli.datamodule.split.test, saved["split"]["test"].numpy())
    fresh = HyperspectralPatchDataModule(
        scene="indian_pines",
        root=str(patch_fit["root"] / "indian_pines"),
        split={"protocol": "per_class", "seed": 7, "train_size": 0.1, "val_size": 0.1},
        num_components=3,
    )
    assert not torch.allclose(fresh.route.mean, route.mean)

    metrics = cli.trainer.callback_metrics
    writer = next(cb for cb in cli.trainer.callbacks if isinstance(cb, HyperspectralMetrics))
    csv_path, png_path = writer.written
    assert png_path.stat().st_size > 0
    with csv_path.open() as f:
        rows = list(csv.reader(f))
    assert rows[0][1:] == cli.datamodule.class_names
    confmat = np.array([[int(v) for v in row[1:]] for row in rows[1:]], dtype=np.float64)
    assert confmat.sum() == len(cli.datamodule.split.test)
    total = confmat.sum()
    observed = np.trace(confmat) / total
    expected = confmat.sum(0) @ confmat.sum(1) / total**2
    recall = np.diag(confmat) / confmat.sum(1)
    assert float(metrics["test/OA"]) == pytest.approx(observed, abs=1e-6)
    assert float(metrics["test/OA"]) == pytest.approx(float(metrics["test/Accuracy_Micro"]))
    assert float(metrics["test/AA"]) == pytest.approx(recall.mean(), abs=1e-6)
    kappa = (observed - expected) / (1 - expected)
    assert float(metrics["test/Kappa"]) == pytest.approx(kappa, abs=1e-6)
    assert float(metrics["test/Class_Accuracy_3"]) == pytest.approx(recall[3], abs=1e-6)


def test_terratorch_predict_in_a_new_process_writes_the_scene_map(patch_fit):
    command = ["predict", "-c", patch_fit["config"], "--ckpt_path", patch_fit["checkpoint"]]
    terratorch(command, patch_fit["folder"], timeout=600)
    maps = patch_fit["folder"] / "maps"
    with (
        warnings.catch_warnings(category=rasterio.errors.NotGeoreferencedWarning, action="ignore"),
        rasterio.open(maps / "indian_pines_class_map.tif") as src,
    ):
        raw = src.read(1)
        assert src.tags()["class_1"] == "Alfalfa" and src.colormap(1)[1][3] == 255
    assert raw.shape == (145, 145) and raw.dtype == np.uint8
    assert raw.min() >= 1 and raw.max() <= 16  # every pixel predicted, labels 1..16
    assert (maps / "indian_pines_class_map.png").stat().st_size > 0


def test_terratorch_custom_writer_is_refused_unless_replaced(patch_fit):
    config = _config(patch_fit["folder"], patch_fit["root"] / "indian_pines", replace=False)
    args = ["predict", "-c", str(config), "--ckpt_path", str(patch_fit["checkpoint"])]
    # CustomWriter would fail on these batches with a TypeError; setup names the fix instead.
    with pytest.raises(ValueError, match="needs the plugin's ClassMapWriter"):
        build_lightning_cli(args)


def test_scene_datamodule_segmentation_fit_test_predict(tmp_path, shared_data):
    def datamodule():
        return HyperspectralSceneDataModule(
            scene="indian_pines",
            root=str(shared_data / "indian_pines"),
            num_components=6,
            tile_size=16,
            inference_stride=16,
            batch_size=16,
        )

    def task():
        return SemanticSegmentationTask(
            model_factory="EncoderDecoderFactory",
            loss="ce",
            ignore_index=-1,
            model_args={
                "backbone": "spectralgpt_vit_base",
                "backbone_depth": 2,
                "backbone_embed_dim": 16,
                "backbone_num_heads": 2,
                "backbone_num_bands": 6,
                "backbone_img_size": 16,
                "necks": [
                    {"name": "SelectIndices", "indices": [0, 1]},
                    {"name": "ReshapeTokensToImage"},
                ],
                "decoder": "UNetDecoder",
                "decoder_channels": [16, 8],
                "num_classes": 16,
            },
        )

    def trainer(callbacks, **kwargs):
        options = {"accelerator": "cpu", "enable_progress_bar": False, "logger": False}
        return Trainer(default_root_dir=tmp_path, callbacks=callbacks, **options, **kwargs)

    fit = trainer([HyperspectralMetrics()], max_steps=2, limit_val_batches=1)
    fit.fit(task(), datamodule())
    checkpoint = tmp_path / "seg.ckpt"
    fit.save_checkpoint(checkpoint)

    metrics = HyperspectralMetrics(output_dir=str(tmp_path / "cm"))
    dm = datamodule()
    results = trainer([metrics]).test(task(), dm, ckpt_path=checkpoint)[0]
    assert {"test/OA", "test/AA", "test/Kappa", "test/Pixel_Accuracy"} <= results.keys()
    assert results["test/OA"] == pytest.approx(results["test/Pixel_Accuracy"], abs=1e-6)
    with metrics.written[0].open() as f:
        counts = [[int(v) for v in row[1:]] for row in list(csv.reader(f))[1:]]
    assert np.sum(counts) == len(dm.split.test)  # every test pixel counted once, -1 ignored

    writer = ClassMapWriter(output_dir=str(tmp_path / "maps"), file_format="npy")
    trainer([writer]).predict(task(), datamodule(), ckpt_path=checkpoint, return_predictions=False)
    class_map = np.load(tmp_path / "maps" / "indian_pines_class_map.npy")
    assert class_map.shape == (145, 145) and class_map.min() >= 1 and class_map.max() <= 16
    np.testing.assert_array_equal(class_map, writer.class_map + 1)
    assert (tmp_path / "maps" / "indian_pines_class_map.png").stat().st_size > 0
