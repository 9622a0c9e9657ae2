"""A task file and a method file compose into one run; the composed runs agree with their data."""

from __future__ import annotations

import shlex
from typing import Any

import pytest
import yaml
from config_helpers import (
    CONFIGS,
    METHOD_FILES,
    command_args,
    config_paths,
    finetuning,
    manifest,
    peft_config,
)

from terratorch_hsi_peft.adapters.config import PEFT_CONFIG_KEYS, PeftSpec
from terratorch_hsi_peft.models.spectral_path_spec import SpectralPathSpec

PEFT_CALLBACKS = {
    "terratorch_hsi_peft.callbacks.AdapterCheckpoint",
    "terratorch_hsi_peft.callbacks.MergeAdaptersForPredict",
}
FULL_FINETUNING = CONFIGS / "full_finetuning.yaml"


def _load(path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def _task_files() -> list:
    files = [config_paths(shlex.split(command))[-1] for command in finetuning()["tasks"].values()]
    assert files, "configs/manifest.yaml lists no fine-tuning task"
    return files


@pytest.mark.parametrize("path", METHOD_FILES, ids=lambda p: p.stem)
def test_each_method_file_is_the_peft_config_its_name_says(path):
    """Only ``peft_config`` keys (no other block), checked as the factory checks them, naming its
    backend where a Hugging Face peft method has the same name; every composed run builds its
    model in tests/configs/test_manifest.py."""
    peft = _load(path)
    assert set(peft) <= set(PEFT_CONFIG_KEYS), "a method file holds the value of peft_config"
    spec = PeftSpec.parse(peft)
    assert (spec.backend, spec.method) == ("plugin", path.stem.upper())
    assert spec.backend_note is None, spec.backend_note
    assert spec.adapter.target_modules == ("attn.q", "attn.v")
    assert spec.adapter_path is None  # a method, not a trained run


def test_the_method_files_cover_the_papers_methods():
    assert {p.stem for p in METHOD_FILES} >= {"lora", "lora_plus", "krona", "krona_plus", "lokr"}


@pytest.mark.parametrize("path", _task_files(), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_task_files_leave_the_method_out_and_full_fine_tuning_drops_the_adapter_callbacks(path):
    config = _load(path)
    task = config["model"]["init_args"]
    assert task["model_factory"] == "PEFTEncoderDecoderFactory"
    assert "peft_config" not in task["model_args"], "the method comes from configs/methods/"
    logger_name = config["trainer"]["logger"]["init_args"]["name"]
    assert config["trainer"]["default_root_dir"] == f"outputs/{logger_name}"
    callbacks = config["trainer"]["callbacks"]
    assert {cb["class_path"] for cb in callbacks} >= PEFT_CALLBACKS
    # configs/full_finetuning.yaml replaces the list: the same callbacks without the adapter ones.
    full = _load(FULL_FINETUNING)
    assert full["trainer"]["callbacks"] == [
        cb for cb in callbacks if cb["class_path"] not in PEFT_CALLBACKS
    ]
    assert set(full) == {"trainer", "model"} and set(full["model"]["init_args"]) == {"lr"}
    assert full["model"]["init_args"]["lr"] < task["lr"]


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
    # Every spectral path parses; it reads appended bands exactly when the data append them.
    path = SpectralPathSpec.from_model_args(model_args)
    assert (path is not None and path.bands is not None) == bool(data.get("append_spectra"))
    if "segmentation" in name:
        assert task["ignore_index"] == -1  # the scene datamodule's label of unused pixels
    if name.startswith("indian_pines/segmentation/"):  # the UNet formulation that generalises
        assert path is not None
        assert data["train_transform"][0]["class_path"].endswith("RandomFlipRotate")


def test_paper_setup():
    """Ligan et al. 2025: PCA to 12, 32x32 patches, SpectralGPT-B pretrained, Q and V, MLP head."""
    names = [n for n in manifest() if n.startswith("paper/")]
    assert {n.rsplit("/", 1)[-1] for n in names} >= {"full", "krona_plus"}
    for name in names:
        paths = config_paths(command_args(name))
        data = next(_load(p)["data"]["init_args"] for p in paths if "data" in _load(p))
        model_args = next(
            _load(p)["model"]["init_args"]["model_args"]
            for p in reversed(paths)
            if "model_args" in _load(p).get("model", {}).get("init_args", {})
        )
        assert (data["band_route"], data["num_components"], data["img_size"]) == ("pca", 12, 32)
        assert model_args["backbone"] == "spectralgpt_vit_base"
        assert model_args["backbone_pretrained"] is True
        assert model_args["necks"] == [{"name": "AggregateTokens", "pooling": "mean"}]
        assert len(model_args["head_dim_list"]) == 1
        peft = peft_config(command_args(name))
        assert peft is None or peft["peft_config_kwargs"]["target_modules"] == ["attn.q", "attn.v"]


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Merge like jsonargparse does for typed blocks (nested mappings key by key)."""
    out = dict(base)
    for key, value in update.items():
        if key != "model_args" and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def test_an_empty_parametrization_fails_the_run(request):
    """A glob that finds nothing (no method file, no task file) is a collection error, not a
    parametrized test that passes without checking anything (pyproject.toml sets it)."""
    assert request.config.getini("empty_parameter_set_mark") == "fail_at_collect"
