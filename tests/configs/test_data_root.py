"""The data files' default root, ~/data/hsi/<scene>, is found without any override."""

from __future__ import annotations

import pytest
import yaml
from config_helpers import CONFIGS

from terratorch_hsi_peft import datamodules


@pytest.mark.parametrize("data_file", sorted((CONFIGS / "data").glob("*.yaml")))
def test_default_root_is_the_user_data_folder(data_file, tmp_path, monkeypatch, shared_data):
    data = yaml.safe_load(data_file.read_text())["data"]
    scene = data["init_args"]["scene"]
    assert data["init_args"]["root"] == f"~/data/hsi/{scene}"
    home_copy = tmp_path / "data" / "hsi" / scene
    home_copy.mkdir(parents=True)
    for source in (shared_data / scene).iterdir():
        (home_copy / source.name).symlink_to(source)
    monkeypatch.setenv("HOME", str(tmp_path))

    cls = getattr(datamodules, data["class_path"].rsplit(".", 1)[1])
    datamodule = cls(**data["init_args"])
    assert datamodule.scene.shape == (145, 145)
    assert datamodule.num_classes == 16
