"""TerraTorch's own example configs through the real ``terratorch`` command, switched to the plugin.

``burn_scars.yaml`` and ``eurosat.yaml`` of TerraTorch's repository (shrunk, see
``tests/terratorch_examples.py``) with the two-line switch of ``docs/existing_pipeline.md`` on
their Prithvi backbones, then with SpectralGPT in place of Prithvi (the backbone name and its
band/size keys changed, nothing else), inside TerraTorch's usual ViT neck chain too. Each runs
``fit`` and then ``predict`` or ``test`` from the ``config_deploy.yaml`` TerraTorch wrote, which
names no class of the plugin.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from terratorch_cli import terratorch
from terratorch_examples import (
    burn_scars,
    eurosat,
    make_burn_scars,
    make_eurosat,
    swap_in_spectralgpt,
    switch_to_plugin,
    write,
)

pytestmark = pytest.mark.slow

#: sen1floods11_vit.yaml's neck chain for a ViT: the last layer's tokens made an image.
VIT_NECKS = [{"name": "SelectIndices", "indices": [-1]}, {"name": "ReshapeTokensToImage"}]
#: ReshapeTokensToImage's warning when it has to guess whether there is a class token.
GUESS_WARNING = "Cannot infer grid shape"


def fit(config: dict, tmp_path: Path) -> tuple[Path, Path, str]:
    """``terratorch fit``; return the config_deploy.yaml, the checkpoint and the output."""
    assert "terratorch_hsi_peft" not in yaml.safe_dump(config)  # no class of the plugin named
    args = ["fit", "--config", write(config, tmp_path / "fit.yaml")]
    output = terratorch(args, tmp_path, warnings="default")
    runs = Path(config["trainer"]["default_root_dir"])
    deploy = runs / "config_deploy.yaml"
    assert "callbacks" not in yaml.safe_load(deploy.read_text())["trainer"]
    (checkpoint,) = (runs / "checkpoints").glob("epoch=*[0-9].ckpt")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert state["global_step"] == 2
    assert any(".krona_" in key for key in state["state_dict"])  # KronA+ factors were trained
    assert "PEFT KRONA_PLUS (plugin) on " in output  # the report line, on the console
    return deploy, checkpoint, output


def predict_burn_scars(deploy: Path, checkpoint: Path, data: Path, tmp_path: Path) -> str:
    predictions = tmp_path / "predictions"
    output = terratorch(
        [
            "predict",
            "--config",
            deploy,
            "--ckpt_path",
            checkpoint,
            "--data.init_args.predict_data_root",
            data / "validation",
            "--predict_output_dir",
            predictions,
        ],
        tmp_path,
        warnings="default",
    )
    scenes = sorted(p.name for p in (data / "validation").glob("*_merged.tif"))
    written = sorted(p.name.replace("_pred.tif", ".tif") for p in predictions.glob("*_pred.tif"))
    assert written == scenes
    return output


def test_burn_scars_on_prithvi_switched_to_the_plugin(tmp_path):
    data = make_burn_scars(tmp_path / "data")
    config = switch_to_plugin(burn_scars(data, tmp_path / "runs"))
    deploy, checkpoint, _ = fit(config, tmp_path)
    predict_burn_scars(deploy, checkpoint, data, tmp_path)


def test_eurosat_on_prithvi_switched_to_the_plugin(tmp_path):
    data = make_eurosat(tmp_path / "data")
    config = switch_to_plugin(eurosat(data, tmp_path / "runs"))
    deploy, checkpoint, _ = fit(config, tmp_path)
    output = terratorch(["test", "--config", deploy, "--ckpt_path", checkpoint], tmp_path)
    assert "test/Accuracy" in output


@pytest.mark.parametrize("necks", ["none", "vit_chain"])
def test_spectralgpt_in_the_burn_scars_pipeline(tmp_path, necks):
    """The backbone name and its band/size keys changed, nothing else: burn_scars as shipped (no
    necks: the backbone's prepare_features_for_image_model) and with TerraTorch's ViT neck chain,
    which takes the leading token for a class token without a warning."""
    data = make_burn_scars(tmp_path / "data")
    prithvi = switch_to_plugin(burn_scars(data, tmp_path / "runs"), fused_qkv=False)
    if necks == "vit_chain":
        prithvi["model"]["init_args"]["model_args"]["necks"] = VIT_NECKS
    config = swap_in_spectralgpt(prithvi)
    deploy, checkpoint, output = fit(config, tmp_path)
    output += predict_burn_scars(deploy, checkpoint, data, tmp_path)
    assert GUESS_WARNING not in output


def test_spectralgpt_in_the_eurosat_pipeline(tmp_path):
    data = make_eurosat(tmp_path / "data")
    config = swap_in_spectralgpt(
        switch_to_plugin(eurosat(data, tmp_path / "runs"), fused_qkv=False)
    )
    deploy, checkpoint, _ = fit(config, tmp_path)
    assert "test/Accuracy" in terratorch(
        ["test", "--config", deploy, "--ckpt_path", checkpoint], tmp_path
    )
