"""model_args.spectral_path as one mapping: parsed once into SpectralPathSpec (issue 33, item 2).

Through the API and through TerraTorch's CLI (in this process), as a user gives it: the mapping
in the task file, the whole mapping or its width as one override, a dotted override of one key,
and the flat keys of earlier releases.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from terratorch.cli_tools import build_lightning_cli

from terratorch_hsi_peft.models import SpectralPathClassifier, SpectralPathSpec
from terratorch_hsi_peft.models.spectral_path_spec import (
    PATH_HEAD,
    SPECTRAL_PATH_KEYS,
    check_spectral_path_data,
)


def test_the_mapping_is_read_with_defaults_and_an_int_is_its_width():
    full = SpectralPathSpec.from_config({"width": 64, "bands": 200, "loss": True, "window": 5})
    assert full == SpectralPathSpec(width=64, bands=200, loss=True, window=5)
    assert SpectralPathSpec.from_config({"width": 8}) == SpectralPathSpec(8, None, False, 1)
    assert SpectralPathSpec.from_config(8) == SpectralPathSpec(8)
    assert SpectralPathSpec.from_config(None) is None
    assert [f.name for f in dataclasses.fields(SpectralPathSpec)] == list(SPECTRAL_PATH_KEYS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        full.width = 32  # type: ignore[misc]


def test_command_line_strings_are_read_as_yaml_scalars():
    given = {"width": "64", "bands": "200", "loss": "true", "window": "5"}
    assert SpectralPathSpec.from_config(given) == SpectralPathSpec(64, 200, True, 5)
    assert SpectralPathSpec.from_config("64") == SpectralPathSpec(64)
    assert SpectralPathSpec.from_config("null") is None
    assert SpectralPathSpec.from_config({"width": 8, "bands": "null"}).bands is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"width": 8, "window_size": 5}, r"unknown keys \['window_size'\]; its keys are width, "),
        ({"bands": 200, "loss": True}, r"has no width \(\{'bands': 200, 'loss': True\}\)"),
        ({"width": 0}, r"spectral_path.width=0 must be a positive integer"),
        ({"width": 8.5}, r"spectral_path.width=8.5 must be a positive integer"),
        ({"width": 8, "bands": 0}, r"spectral_path.bands=0 must be a positive integer .* or null"),
        ({"width": 8, "loss": "yes"}, r"spectral_path.loss='yes' must be true or false"),
        ({"width": 8, "window": 4}, r"spectral_path.window=4 must be a positive odd integer"),
        ({"width": 8, "window": True}, r"spectral_path.window=True must be a positive odd"),
        (0, r"spectral_path.width=0 must be a positive integer"),
        (True, r"spectral_path is True; give a mapping such as \{width: 64, bands: 200, "),
        ("wide", r"spectral_path is 'wide'; give a mapping .* its width alone \(e.g. 64\)"),
        ([64], r"spectral_path is \[64\]; give a mapping"),
    ],
)
def test_a_bad_value_names_the_key_and_the_fix(value, message):
    with pytest.raises(ValueError, match=message):
        SpectralPathSpec.from_config(value)


@pytest.mark.parametrize(
    ("model_args", "written"),
    [
        (
            {
                "spectral_path": 64,
                "spectral_path_bands": 200,
                "spectral_path_loss": True,
                "spectral_path_window": 5,
            },
            "spectral_path: {width: 64, bands: 200, loss: true, window: 5}",
        ),
        (  # as dotted command-line overrides give them
            {"spectral_path": "8", "spectral_path_loss": "true"},
            "spectral_path: {width: 8, loss: true}",
        ),
        (
            {"spectral_path_bands": 200},
            "spectral_path: {width: <hidden width, e.g. 64>, bands: 200}",
        ),
        (  # set to true, not to its default (true == 1, window's default)
            {"spectral_path": None, "spectral_path_loss": True},
            "spectral_path: {width: <hidden width, e.g. 64>, loss: true}",
        ),
    ],
)
def test_the_flat_keys_of_earlier_releases_show_the_mapping_to_write(model_args, written):
    with pytest.raises(ValueError, match="Write instead") as error:
        SpectralPathSpec.from_model_args(model_args)
    message = str(error.value)
    assert message.endswith(f"\n  {written}")
    assert "model_args.spectral_path: {width, bands, loss, window}" in message
    flat = [key for key in model_args if key != "spectral_path"]
    assert f"(and remove {', '.join(flat)})" in message


def test_unset_flat_keys_are_named_for_removal():
    model_args = {"spectral_path": None, "spectral_path_loss": False, "spectral_path_window": 1}
    message = r"spectral_path is unset, so they set nothing: remove spectral_path_loss, spectral_"
    with pytest.raises(ValueError, match=message):
        SpectralPathSpec.from_model_args(model_args)


DATA = "append_spectra: True, synthetic: 6 bands"


@pytest.mark.parametrize(
    ("path", "aux_loss", "appended", "message"),
    [
        ({"width": 8, "bands": 6}, None, 6, None),
        ({"width": 8, "bands": "6", "loss": "true"}, {PATH_HEAD: 0.5}, 6, None),
        (8, None, 0, None),
        (None, None, 0, None),
        (
            None,
            None,
            6,
            r"The task's model_args.spectral_path is unset but the data append 6 spectral bands "
            r"\(append_spectra: True, synthetic: 6 bands\); set append_spectra: true and "
            r"model_args.spectral_path.bands: 6 together, or neither\.",
        ),
        (8, None, 6, r"spectral_path.bands is None but the data append 6"),
        ({"width": 8, "bands": 6}, None, 0, r"spectral_path.bands is 6 but the data append 0"),
        ({"width": 8, "bands": 5}, None, 6, r"spectral_path.bands: 6 together"),
        (
            {"width": 8, "bands": 6, "loss": True},
            {"other": 1.0},
            6,
            r"spectral_path.loss is true, .* aux_loss gives them no weight \(\{'other': 1.0\}\); "
            r"set aux_loss: \{spectral_path: 1.0\} .* or model_args.spectral_path.loss: false",
        ),
        (
            {"width": 8, "bands": 6},
            {PATH_HEAD: 1.0},
            6,
            r"aux_loss weights 'spectral_path', but the model has no such head \(model_args."
            r"spectral_path.loss is false\); set model_args.spectral_path.loss: true",
        ),
        (None, {PATH_HEAD: 1.0}, 0, r"no such head \(model_args.spectral_path is unset\)"),
    ],
)
def test_the_data_and_the_task_must_agree_with_the_path(path, aux_loss, appended, message):
    model_args = {"backbone_num_bands": 3, "spectral_path": path}
    if message is None:
        spec = check_spectral_path_data(model_args, aux_loss, appended, 6, DATA)
        assert spec == SpectralPathSpec.from_config(path)
    else:
        with pytest.raises(ValueError, match=message):
            check_spectral_path_data(model_args, aux_loss, appended, 6, DATA)


# -- through TerraTorch's CLI ------------------------------------------------------------------

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
  enable_checkpointing: false
  logger: false
  default_root_dir: {folder}/run
data:
  class_path: terratorch_hsi_peft.datamodules.HyperspectralPatchDataModule
  init_args:
    scene: generic
    root: {folder}
    scene_options: {{image_path: cube.npy, label_path: labels.npy, name: synthetic}}
    split: {{protocol: per_class, seed: 0, train_size: 0.3, val_size: 0.2}}
    band_route: pca
    num_components: 3
    append_spectra: true
    patch_size: 3
    img_size: 8
    batch_size: 64
model:
  class_path: terratorch.tasks.ClassificationTask
  init_args:
    model_factory: PEFTEncoderDecoderFactory
    aux_loss: {{spectral_path: 1.0}}
    model_args:
      backbone: spectralgpt_vit_base
      backbone_depth: 1
      backbone_embed_dim: 16
      backbone_num_heads: 2
      backbone_num_bands: 3
      backbone_img_size: 8
      backbone_out_indices: [-1]
      necks: [{{name: AggregateTokens, pooling: mean}}]
      decoder: IdentityDecoder
      num_classes: 3
{path}
"""

MAPPING = """\
      spectral_path:
        width: 8
        bands: 6
        loss: true"""
FLAT = """\
      spectral_path: 8
      spectral_path_bands: 6
      spectral_path_loss: true"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A 6-band synthetic scene on disk."""
    folder = tmp_path_factory.mktemp("spectral_path_cli")
    rng = np.random.default_rng(0)
    np.save(folder / "cube.npy", rng.normal(size=(16, 16, 6)))
    np.save(folder / "labels.npy", rng.integers(0, 4, size=(16, 16)))
    return folder


def _config(folder: Path, path: str) -> str:
    config = folder / f"config_{len(list(folder.glob('config_*.yaml')))}.yaml"
    config.write_text(CONFIG.format(folder=folder, path=path))
    return str(config)


def test_the_mapping_in_a_task_file_trains(folder):
    cli = build_lightning_cli(["fit", "-c", _config(folder, MAPPING)])
    assert cli.trainer.global_step == 1
    model = cli.model.model
    assert isinstance(model, SpectralPathClassifier)
    assert model.spec == SpectralPathSpec(width=8, bands=6, loss=True)
    assert model.spectral_path[0].in_features == 6


def test_the_whole_mapping_as_one_override(folder):
    override = ["--model.init_args.model_args.spectral_path", "{width: 4, bands: 6, loss: true}"]
    cli = build_lightning_cli(["fit", "-c", _config(folder, MAPPING), *override])
    assert cli.model.model.spec == SpectralPathSpec(width=4, bands=6, loss=True)


def test_a_dotted_override_of_one_key_names_the_whole_mapping_as_the_fix(folder):
    # jsonargparse replaces model_args.spectral_path (an untyped dict's value) by {loss: "false"}.
    override = ["--model.init_args.model_args.spectral_path.loss", "false"]
    message = (
        r"has no width \(\{'loss': 'false'\}\).*replaces the whole mapping.*"
        r'--model.init_args.model_args.spectral_path "\{width: 64, bands: 200, window: 5\}"'
    )
    with pytest.raises(ValueError, match=message):
        build_lightning_cli(["fit", "-c", _config(folder, MAPPING), *override])


def test_a_task_file_with_the_flat_keys_is_refused_with_the_mapping(folder):
    # jsonargparse indents the factory's message under its own.
    message = r"Write instead \(and remove spectral_path_bands, spectral_path_loss\):\n +" + (
        r"spectral_path: \{width: 8, bands: 6, loss: true\}\n"
    )
    with pytest.raises(ValueError, match=message):
        build_lightning_cli(["fit", "-c", _config(folder, FLAT)])
