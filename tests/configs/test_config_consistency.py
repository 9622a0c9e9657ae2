"""The experiment files of one task differ only where their methods differ, and agree with data."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from config_helpers import CONFIGS, command_args, config_paths, manifest

from terratorch_hsi_peft.peft.config import AdapterConfig

TASK_FOLDERS = [
    "indian_pines/classification",
    "indian_pines/segmentation",
    "indian_pines/segmentation_linear",
    "paper",
]
PEFT_CALLBACKS = {
    "terratorch_hsi_peft.callbacks.AdapterCheckpoint",
    "terratorch_hsi_peft.callbacks.MergeAdaptersForPredict",
}


def _load(path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def _method(path) -> str:
    return path.stem.removeprefix("spectralgpt_b_")


def _shared_part(config: dict[str, Any]) -> dict[str, Any]:
    """The config without what legitimately depends on the method and the run's name."""
    config = copy.deepcopy(config)
    trainer, task = config["trainer"], config["model"]["init_args"]
    del trainer["default_root_dir"], trainer["logger"]
    trainer["callbacks"] = [
        {k: v for k, v in cb.items() if k != "init_args"}
        for cb in trainer["callbacks"]
        if cb["class_path"] not in PEFT_CALLBACKS
    ]
    del task["model_factory"], task["lr"]
    task["model_args"].pop("peft_config", None)
    return config


@pytest.mark.parametrize("folder", TASK_FOLDERS)
def test_method_files_of_a_task_share_everything_else(folder):
    files = sorted((CONFIGS / folder).glob("*.yaml"))
    assert {_method(f) for f in files} >= {"full", "krona_plus"}
    shared = {f.name: _shared_part(_load(f)) for f in files}
    reference = shared.pop(files[0].name)
    for name, part in shared.items():
        assert part == reference, f"{folder}/{name} differs from {files[0].name} beyond its method"


@pytest.mark.parametrize("folder", TASK_FOLDERS)
def test_each_file_sets_up_the_method_its_name_says(folder):
    for path in sorted((CONFIGS / folder).glob("*.yaml")):
        config = _load(path)
        task = config["model"]["init_args"]
        callbacks = {cb["class_path"] for cb in config["trainer"]["callbacks"]}
        peft = task["model_args"].get("peft_config")
        if _method(path) == "full":
            assert task["model_factory"] == "EncoderDecoderFactory" and peft is None
            assert not callbacks & PEFT_CALLBACKS
            continue
        assert task["model_factory"] == "PEFTEncoderDecoderFactory"
        adapter = AdapterConfig.from_peft_config(peft)  # valid keys and values
        assert adapter.method.name == _method(path).upper()
        assert adapter.target_modules == ("attn.q", "attn.v")
        assert callbacks >= PEFT_CALLBACKS


@pytest.mark.parametrize("name", sorted(manifest()))
def test_model_matches_data_and_schedule_matches_epochs(name):
    merged: dict[str, Any] = {}
    for path in config_paths(command_args(name)):
        for block, value in _load(path).items():
            if isinstance(value, dict) and isinstance(merged.get(block), dict):
                merged[block] = _merge(merged[block], value)
            else:
                merged[block] = value
    data = merged["data"]["init_args"]
    task = merged["model"]["init_args"]
    model_args = task["model_args"]
    if "model" in model_args:  # a masked autoencoder of FullModelFactory: keys without backbone_
        model_args = {f"backbone_{k}": v for k, v in model_args.items()}
        if data["band_route"] == "sentinel2":
            data = {**data, "num_components": 12}
    assert model_args["backbone_num_bands"] == data["num_components"]
    side = data.get("img_size", data.get("tile_size", data.get("window_size")))
    assert model_args["backbone_img_size"] == side
    assert side % model_args.get("backbone_patch_size", 8) == 0
    if task.get("scheduler") == "CosineAnnealingLR":
        assert task["scheduler_hparams"]["T_max"] == merged["trainer"]["max_epochs"]
    top_level = merged.get("lr_scheduler", {})  # LightningCLI's block (ReconstructionTask)
    if top_level.get("class_path", "").endswith("CosineAnnealingLR"):
        assert top_level["init_args"]["T_max"] == merged["trainer"]["max_epochs"]
        assert "scheduler" not in task  # the top-level block replaces the task's
    if "segmentation" in name:
        assert task["ignore_index"] == -1  # the scene datamodule's label of unused pixels


def test_paper_setup():
    """Ligan et al. 2025: PCA to 12, 32x32 patches, SpectralGPT-B pretrained, Q and V, MLP head."""
    for name in (n for n in manifest() if n.startswith("paper/")):
        paths = config_paths(command_args(name))
        data = next(_load(p)["data"]["init_args"] for p in paths if "data" in _load(p))
        model_args = _load(paths[-1])["model"]["init_args"]["model_args"]
        assert (data["band_route"], data["num_components"], data["img_size"]) == ("pca", 12, 32)
        assert model_args["backbone"] == "spectralgpt_vit_base"
        assert model_args["backbone_pretrained"] is True
        assert model_args["necks"] == [{"name": "AggregateTokens", "pooling": "mean"}]
        assert len(model_args["head_dim_list"]) == 1


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Merge like jsonargparse does for typed blocks (nested mappings key by key)."""
    out = dict(base)
    for key, value in update.items():
        if key != "model_args" and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
