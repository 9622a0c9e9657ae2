"""The datamodules' setup checks against the attached task, through the API and the real CLI.

Each test reproduces a slip of issue 13 (a dotted CLI override compared as a string, an
unlabelled scene predicted with a trained checkpoint, a wrong ``ignore_index``, ``predict``
without ``ClassMapWriter``) and shows the message that now names the fix.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lightning import Trainer
from task_stand_in import fit_setup
from terratorch.cli_tools import build_lightning_cli
from terratorch.tasks import ClassificationTask, SemanticSegmentationTask

from terratorch_hsi_peft.callbacks import ClassMapWriter
from terratorch_hsi_peft.datamodules import (
    HyperspectralPatchDataModule,
    HyperspectralSceneDataModule,
)
from terratorch_hsi_peft.datasets import HyperspectralScene

TINY_BACKBONE = {
    "backbone": "spectralgpt_vit_base",
    "backbone_depth": 1,
    "backbone_embed_dim": 16,
    "backbone_num_heads": 2,
    "backbone_num_bands": 3,
    "backbone_img_size": 8,
}

CONFIG = """\
seed_everything: 0
trainer:
  accelerator: cpu
  devices: 1
  max_steps: 1
  limit_val_batches: 1
  num_sanity_val_steps: 0
  enable_progress_bar: false
  enable_model_summary: false
  logger: false
  default_root_dir: {folder}/run
  callbacks: {callbacks}
data:
  class_path: terratorch_hsi_peft.datamodules.HyperspectralPatchDataModule
  init_args:
    scene: generic
    root: {folder}
    scene_options:
      image_path: cube.npy
      label_path: labels.npy
      class_names: [meadow, forest, water]
      name: synthetic
    split: {{protocol: per_class, seed: 0, train_size: 0.3, val_size: 0.2}}
    band_route: pca
    num_components: 3
    patch_size: 3
    img_size: 8
    batch_size: 256
model:
  class_path: terratorch.tasks.ClassificationTask
  init_args:
    model_factory: EncoderDecoderFactory
    model_args:
      backbone: spectralgpt_vit_base
      backbone_depth: 1
      backbone_embed_dim: 16
      backbone_num_heads: 2
      backbone_num_bands: 3
      backbone_img_size: 8
      backbone_out_indices: [-1]
      decoder: IdentityDecoder
      num_classes: 3
"""

WRITER = (
    "[{class_path: terratorch_hsi_peft.callbacks.ClassMapWriter, init_args: {file_format: npy}}]"
)


def _scene(size: int = 20, bands: int = 5) -> HyperspectralScene:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(size, size, bands))
    labels = rng.integers(0, 4, size=(size, size))
    return HyperspectralScene(image, labels, class_names=["a", "b", "c"], name="synthetic")


def _config(folder: Path, callbacks: str = WRITER) -> Path:
    path = folder / f"config_{len(list(folder.glob('config_*.yaml')))}.yaml"
    path.write_text(CONFIG.format(folder=folder, callbacks=callbacks))
    return path


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A synthetic scene on disk and a one-step fit of it through the CLI."""
    folder = tmp_path_factory.mktemp("checks")
    scene = _scene(bands=6)
    np.save(folder / "cube.npy", scene.image)
    np.save(folder / "labels.npy", scene.labels)
    np.save(folder / "unlabelled.npy", _scene(size=12, bands=6).image)
    cli = build_lightning_cli(["fit", "-c", str(_config(folder))])
    assert cli.trainer.global_step == 1
    checkpoint = Path(cli.trainer.checkpoint_callback.best_model_path)
    return {"folder": folder, "checkpoint": checkpoint}


# -- item 6: dotted CLI overrides are compared as the values they stand for --------------------


def test_dotted_override_of_the_band_count_is_accepted_and_a_wrong_one_named(fitted):
    config = str(_config(fitted["folder"]))
    override = "--model.init_args.model_args.backbone_num_bands"
    cli = build_lightning_cli(["fit", "-c", config, override, "3"])
    assert cli.trainer.global_step == 1
    with pytest.raises(ValueError, match=r"backbone_num_bands is 4 but the data give 3.*: 3\."):
        build_lightning_cli(["validate", "-c", config, override, "4"])


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"num_classes": "3", "backbone_num_bands": "5"}, None),
        ({"num_classes": "4"}, r"num_classes is 4 but the data give 3 .*; set num_classes: 3\."),
        ({"backbone_num_bands": "true"}, r"backbone_num_bands is True but the data give 5"),
        ({"backbone_num_bands": 5.0}, r"backbone_num_bands is 5.0 but the data give 5"),
    ],
)
def test_setup_reads_cli_strings_as_yaml_scalars(given, message):
    dm = HyperspectralPatchDataModule(scene=_scene(), band_route="standardize")
    fit_setup(dm, given, message)


@pytest.mark.parametrize(
    ("append", "given", "message"),
    [
        (True, {"spectral_path": {"width": 8, "bands": "5"}}, None),  # read as YAML
        (True, {}, r"spectral_path is unset but the data append 5 spectral bands"),
        (True, {"spectral_path": 8}, r"spectral_path.bands is None but the data append 5 "),
        (False, {"spectral_path": {"width": 8, "bands": 5}}, r"bands is 5 but the data append 0"),
        (
            True,
            {"spectral_path": {"width": 8, "bands": 4}},
            r"set append_spectra: true and model_args.spectral_path.bands: 5 together",
        ),
    ],
)
def test_appended_spectra_and_the_paths_bands_must_agree(append, given, message):
    dm = HyperspectralSceneDataModule(
        scene=_scene(), band_route="pca", num_components=3, append_spectra=append, tile_size=8
    )
    fit_setup(dm, {"backbone_num_bands": 3, **given}, message)


@pytest.mark.parametrize(
    ("given", "aux_loss", "message"),
    [
        ({"loss": True}, {"spectral_path": 0.5}, None),
        ({"loss": "true"}, {"spectral_path": 1.0}, None),  # a dotted override
        ({}, None, None),
        ({"loss": True}, None, r"set aux_loss: \{spectral_path: 1.0\}"),
        ({"loss": True}, {"other": 1.0}, r"aux_loss gives them no weight"),
        ({}, {"spectral_path": 1.0}, r"set model_args.spectral_path.loss: true"),
        ({"loss": False}, {"spectral_path": 1.0}, r"spectral_path.loss is false\)"),
    ],
)
def test_the_paths_own_loss_is_weighted_by_the_task_or_off(given, aux_loss, message):
    # Without the weight the stock loss handler fails at the first step with an unclear
    # message; a weight without the model's flag would be ignored silently.
    dm = HyperspectralSceneDataModule(
        scene=_scene(), band_route="pca", num_components=3, append_spectra=True, tile_size=8
    )
    model_args = {"backbone_num_bands": 3, "spectral_path": {"width": 8, "bands": 5, **given}}
    fit_setup(dm, model_args, message, aux_loss=aux_loss)


# -- item 7: an unlabelled scene is predicted with a trained checkpoint ------------------------


def test_predict_an_unlabelled_scene_with_the_trained_checkpoint(fitted):
    folder = fitted["folder"]
    unlabelled = "{image_path: unlabelled.npy, name: unlabelled}"
    cli = build_lightning_cli(
        [
            "predict",
            "-c",
            str(_config(folder)),
            "--data.init_args.scene_options",
            unlabelled,
            "--ckpt_path",
            str(fitted["checkpoint"]),
        ]
    )
    assert not cli.datamodule.scene.has_labels
    assert cli.datamodule.class_names == ["meadow", "forest", "water"]  # from the checkpoint
    class_map = np.load(folder / "run" / "predictions" / "unlabelled_class_map.npy")
    assert class_map.shape == (12, 12) and class_map.min() >= 1 and class_map.max() <= 3
    assert (folder / "run" / "predictions" / "unlabelled_class_map.png").stat().st_size > 0


def test_an_unlabelled_scene_without_a_checkpoint_says_where_its_band_route_comes_from():
    scene = HyperspectralScene(_scene().image, name="unlabelled")
    dm = HyperspectralPatchDataModule(scene=scene)
    dm.trainer = SimpleNamespace(
        lightning_module=SimpleNamespace(hparams={"model_args": {"num_classes": 16}}),
        callbacks=[],
    )
    dm.setup("predict")  # no num_classes to compare: the checkpoint's names come later
    assert dm.class_names == [f"class_{k}" for k in range(1, 17)]
    with pytest.raises(ValueError, match=r"has no labels.*--ckpt_path"):
        dm.predict_dataloader()


def test_the_tile_datamodule_predicts_an_unlabelled_scene_with_a_restored_route():
    trained = HyperspectralSceneDataModule(scene=_scene(), band_route="standardize", tile_size=8)
    trained.routed_cube()
    state = trained.state_dict()  # what the training run's checkpoint holds
    scene = HyperspectralScene(_scene(size=12).image, name="unlabelled")
    dm = HyperspectralSceneDataModule(scene=scene, band_route="standardize", tile_size=8)
    hparams = {"model_args": {"num_classes": 3, "backbone_num_bands": 5}, "ignore_index": -1}
    dm.trainer = SimpleNamespace(lightning_module=SimpleNamespace(hparams=hparams), callbacks=[])
    dm.setup("predict")
    dm.load_state_dict(state)  # Lightning restores the datamodule after setup
    assert dm.class_names == ["a", "b", "c"]
    batch = next(iter(dm.predict_dataloader()))
    assert batch["image"].shape[1:] == (5, 8, 8) and "mask" not in batch
    torch.testing.assert_close(dm.route.mean, trained.route.mean)


# -- item 8: the segmentation task's ignore_index ----------------------------------------------


def _segmentation_task(**kwargs) -> SemanticSegmentationTask:
    return SemanticSegmentationTask(
        model_factory="EncoderDecoderFactory",
        loss="ce",
        model_args={
            **TINY_BACKBONE,
            "backbone_num_bands": 5,
            "necks": [
                {"name": "SelectIndices", "indices": [-1]},
                {"name": "ReshapeTokensToImage"},
            ],
            "decoder": "FCNDecoder",
            "num_classes": 3,
        },
        **kwargs,
    )


@pytest.mark.parametrize(("kwargs", "given"), [({}, "None"), ({"ignore_index": 255}, "255")])
def test_segmentation_without_the_right_ignore_index_says_what_to_set(kwargs, given):
    dm = HyperspectralSceneDataModule(scene=_scene(), band_route="standardize", tile_size=8)
    trainer = Trainer(max_steps=1, logger=False, enable_progress_bar=False, accelerator="cpu")
    with pytest.raises(
        ValueError, match=rf"ignore_index is {given}, .*set the task's ignore_index: -1"
    ):
        trainer.fit(_segmentation_task(**kwargs), dm)


def test_patch_classes_are_never_ignored_and_tasks_are_not_swapped():
    trainer = Trainer(max_steps=1, logger=False, enable_progress_bar=False, accelerator="cpu")
    dm = HyperspectralPatchDataModule(scene=_scene(), band_route="standardize", img_size=8)
    task = ClassificationTask(
        model_factory="EncoderDecoderFactory",
        ignore_index=1,
        model_args={
            **TINY_BACKBONE,
            "backbone_num_bands": 5,
            "backbone_out_indices": [-1],
            "decoder": "IdentityDecoder",
            "num_classes": 3,
        },
    )
    with pytest.raises(ValueError, match=r"ignore_index is 1, the index of class 'b'"):
        trainer.fit(task, dm)
    scene_dm = HyperspectralSceneDataModule(scene=_scene(), band_route="standardize", tile_size=8)
    with pytest.raises(
        ValueError, match="use HyperspectralPatchDataModule with ClassificationTask"
    ):
        trainer.fit(task, scene_dm)


# -- item 9: predict without ClassMapWriter ----------------------------------------------------


def test_predict_without_class_map_writer_adds_one_and_says_where_it_wrote(fitted, caplog):
    # As from a config_deploy.yaml: TerraTorch drops trainer.callbacks there.
    args = ["predict", "-c", str(_config(fitted["folder"], "[]"))]
    with caplog.at_level(logging.INFO):
        cli = build_lightning_cli([*args, "--ckpt_path", str(fitted["checkpoint"])])
    (writer,) = [cb for cb in cli.trainer.callbacks if isinstance(cb, ClassMapWriter)]
    maps = fitted["folder"] / "run" / "predictions"  # under trainer.default_root_dir
    assert writer.written == [maps / "synthetic_class_map.tif", maps / "synthetic_class_map.png"]
    assert all(path.is_file() for path in writer.written)
    assert "HyperspectralPatchDataModule: trainer.callbacks has no ClassMapWriter" in caplog.text
    assert f"ClassMapWriter: wrote {maps / 'synthetic_class_map.tif'}" in caplog.text


def test_predict_with_a_class_map_writer_keeping_terratorchs_writer_says_what_to_change(fitted):
    callbacks = (
        "[{class_path: terratorch_hsi_peft.callbacks.ClassMapWriter, "
        "init_args: {replace_terratorch_writer: false}}]"
    )
    args = ["predict", "-c", str(_config(fitted["folder"], callbacks))]
    with pytest.raises(
        ValueError, match=r"needs the plugin's ClassMapWriter.*Remove replace_terratorch_writer"
    ):
        build_lightning_cli([*args, "--ckpt_path", str(fitted["checkpoint"])])
