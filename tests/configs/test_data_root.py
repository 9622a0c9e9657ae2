"""The data files' default root, $HSI_DATA/<scene>: one variable names the folder of all scenes."""

from __future__ import annotations

import pytest
import yaml
from config_helpers import CONFIGS

from terratorch_hsi_peft import datamodules

DATA_FILES = sorted((CONFIGS / "data").glob("*.yaml"))


def _datamodule(data_file):
    data = yaml.safe_load(data_file.read_text())["data"]
    cls = getattr(datamodules, data["class_path"].rsplit(".", 1)[1])
    return data, lambda: cls(**data["init_args"])


@pytest.mark.parametrize("data_file", DATA_FILES, ids=lambda path: path.stem)
def test_default_root_is_the_data_variable(data_file, tmp_path, monkeypatch, shared_data):
    data, build = _datamodule(data_file)
    scene = data["init_args"]["scene"]
    assert data["init_args"]["root"] == f"$HSI_DATA/{scene}"
    copy = tmp_path / "my data" / scene
    copy.mkdir(parents=True)
    for source in (shared_data / scene).iterdir():
        (copy / source.name).symlink_to(source)
    monkeypatch.setenv("HSI_DATA", str(tmp_path / "my data"))

    datamodule = build()
    assert datamodule.scene.shape == (145, 145)
    assert datamodule.num_classes == 16


@pytest.mark.parametrize("data_file", DATA_FILES[:1], ids=lambda path: path.stem)
def test_an_unset_data_variable_names_it_and_the_fix(data_file, monkeypatch):
    monkeypatch.delenv("HSI_DATA", raising=False)
    _, build = _datamodule(data_file)
    with pytest.raises(
        ValueError,
        match=r"'\$HSI_DATA/indian_pines' names an environment variable that is not "
        r"set.*export HSI_DATA=.*--data.init_args.root",
    ):
        assert build().scene.shape  # the scene loads on first use
