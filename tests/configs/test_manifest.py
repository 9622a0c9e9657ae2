"""Every experiment of configs/manifest.yaml builds its model through TerraTorch's real CLI.

``build_lightning_cli`` is what the ``terratorch`` command runs; with ``run=False`` it parses the
composed configs and instantiates trainer, datamodule and task (so the model) without training.
``backbone_pretrained`` (``pretrained`` for the masked autoencoders) is switched off (nothing can
be downloaded here) and the data root points at the shared files; one batch of the real scene then
goes through the model.
"""

from __future__ import annotations

import shlex
import sys

import pytest
import torch
import yaml
from config_helpers import (
    CONFIGS,
    METHOD_FILES,
    REPO_ROOT,
    command_args,
    config_paths,
    finetuning,
    flag_value,
    manifest,
    offline_args,
    peft_config,
)
from terratorch.cli_tools import build_lightning_cli

from terratorch_hsi_peft.pretraining import SpectralGPTMAE

EXPERIMENTS = sorted(manifest())
#: Step 1 of the pre-training recipe: the masked autoencoder (ReconstructionTask).
PRETRAINING = {name for name in EXPERIMENTS if name.startswith("pretraining/") and "_mae" in name}
#: Step 2: fine-tuning experiments that start from step 1's encoder file.
FROM_PRETRAINED = {n for n in EXPERIMENTS if n.startswith("pretraining/")} - PRETRAINING


def test_manifest_lists_every_experiment_file_and_only_existing_files():
    listed = {path for name in EXPERIMENTS for path in config_paths(command_args(name))}
    missing = sorted(str(p.relative_to(REPO_ROOT)) for p in listed if not p.is_file())
    assert not missing, f"manifest commands name missing files: {missing}"
    method_values = set(METHOD_FILES)  # passed as peft_config values, not with --config
    generated = set((CONFIGS / "experiments").rglob("*.yaml"))  # test_experiment_files.py
    experiment_files = (
        # products/: predict overlays that go after an experiment's configs, not experiments.
        {p for p in CONFIGS.rglob("*.yaml") if p.parent.name not in ("base", "data", "products")}
        - generated
        - {CONFIGS / "manifest.yaml"}
        - method_values
    )
    unlisted = sorted(str(p.relative_to(REPO_ROOT)) for p in experiment_files - listed)
    assert not unlisted, f"experiment files no manifest command runs: {unlisted}"


def test_every_task_runs_with_full_fine_tuning_and_every_method_file():
    names = set(EXPERIMENTS)
    for task in finetuning()["tasks"]:
        for method in ["full", *(path.stem for path in METHOD_FILES)]:
            assert f"{task}/{method}" in names
    args = command_args("indian_pines/classification/krona_plus")
    assert peft_config(args) == yaml.safe_load(
        (CONFIGS / "methods" / "krona_plus.yaml").read_text()
    )
    assert peft_config(command_args("indian_pines/classification/full")) is None


def test_every_experiment_has_its_own_output_folder():
    folders = {}
    for name in EXPERIMENTS:
        args = command_args(name)
        logger_name = flag_value(args, "--trainer.logger.init_args.name")
        if logger_name is not None:  # a composed fine-tuning run
            assert flag_value(args, "--trainer.default_root_dir") == f"outputs/{name}"
        else:  # a listed experiment: its file names its folders
            text = config_paths(args)[-1].read_text()
            assert f"default_root_dir: outputs/{name}\n" in text, name
            assert f"dirpath: outputs/{name}/checkpoints," in text, name
            logger_name = yaml.safe_load(text)["trainer"]["logger"]["init_args"]["name"]
        assert logger_name == name
        folders[name] = logger_name
    assert len(set(folders.values())) == len(EXPERIMENTS)


def offline_model_args(name: str) -> dict[str, object]:
    """What makes an experiment's model build here: no downloads, no step-1 encoder file."""
    if name in PRETRAINING:  # the masked autoencoder's own keys (FullModelFactory)
        return {"pretrained": False}
    offline = {"backbone_pretrained": False}
    if name in FROM_PRETRAINED:  # step 2 of the recipe: its encoder file is step 1's output
        offline["backbone_ckpt_path"] = None
    return offline


def data_root(args: list[str], shared_data) -> str:
    """The shared copy of the experiment's data root: one scene's folder, or the folder of all."""
    for path in config_paths(args):
        data = yaml.safe_load(path.read_text()).get("data")
        if data is not None:
            multi_scene = data["init_args"]["root"] == "$HSI_DATA"
            return str(shared_data if multi_scene else shared_data / "indian_pines")
    raise AssertionError(f"no data config in {args}")


def test_pretraining_recipe_is_listed_and_step_two_reads_step_one_output():
    assert {"pretraining/indian_pines_mae", "pretraining/mixed_sensors_mae"} <= PRETRAINING
    for name in FROM_PRETRAINED:
        model_args = yaml.safe_load(config_paths(command_args(name))[-1].read_text())["model"]
        path = model_args["init_args"]["model_args"]["backbone_ckpt_path"]
        assert path == "outputs/pretraining/indian_pines_mae/checkpoints/encoder.pth"
        assert model_args["init_args"]["model_args"]["backbone_pretrained"] is False
    assert FROM_PRETRAINED


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_builds_its_model_and_runs_a_real_batch(
    name, tmp_path, monkeypatch, shared_data
):
    args = offline_args(command_args(name), tmp_path, **offline_model_args(name))
    monkeypatch.chdir(tmp_path)  # the trainer's output folders are relative paths
    monkeypatch.setattr(sys, "argv", ["terratorch"])  # as the command sees it: args only
    root = data_root(args, shared_data)
    cli = build_lightning_cli([*args[1:], "--data.init_args.root", root], run=False)

    model_args = cli.model.hparams["model_args"]
    datamodule = cli.datamodule
    if name in PRETRAINING:
        assert isinstance(cli.model.model, SpectralGPTMAE)
        assert model_args["num_bands"] == datamodule.num_bands
        assert model_args["img_size"] == datamodule.img_size
        assert all(p.requires_grad for p in cli.model.model.parameters())
        batch = datamodule.on_after_batch_transfer(next(iter(datamodule.train_dataloader())), 0)
        with torch.no_grad():
            out = cli.model(batch["image"][:2])
        assert out.pred.shape == batch["image"][:2].shape
        assert torch.isfinite(out.loss["loss"]) and out.loss["loss"] > 0
        return
    assert model_args["num_classes"] == datamodule.num_classes == 16
    assert model_args["backbone_num_bands"] == datamodule.num_bands
    peft = model_args.get("peft_config")
    encoder = cli.model.model.encoder
    trainable = {n for n, p in encoder.named_parameters() if p.requires_grad}
    if peft is None:
        assert trainable == {n for n, _ in encoder.named_parameters()}
    else:  # only adapter factors train in the encoder, on Q and V of every block
        assert trainable and all(".attn.q." in n or ".attn.v." in n for n in trainable), trainable

    batch = datamodule.on_after_batch_transfer(next(iter(datamodule.train_dataloader())), 0)
    with torch.no_grad():
        logits = cli.model(batch["image"][:2]).output
    classes = datamodule.num_classes
    patch_data = any(p.name == "indian_pines_patch.yaml" for p in config_paths(args))
    if patch_data:  # patch classification: one logit vector per window
        assert logits.shape == (2, classes)
    else:
        assert logits.shape == (2, classes, *batch["image"].shape[-2:])
    assert torch.isfinite(logits).all()


@pytest.mark.slow
def test_a_task_file_without_a_method_stops_before_training(tmp_path, monkeypatch, shared_data):
    """No silent full fine-tuning at the adapters' learning rate: a task file needs a method or
    configs/full_finetuning.yaml, and says so when ``fit`` starts."""
    command = shlex.split(finetuning()["tasks"]["indian_pines/classification"])
    small = {"backbone_pretrained": False, "backbone_embed_dim": 48, "backbone_depth": 1}
    args = offline_args(command[1:], tmp_path, **small)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["terratorch"])
    root = data_root(args, shared_data)
    cli = build_lightning_cli(
        [*args[1:], "--data.init_args.root", root, "--trainer.fast_dev_run", "1"], run=False
    )
    assert cli.model.hparams["model_args"].get("peft_config") is None
    with pytest.raises(ValueError, match="AdapterCheckpoint needs a model with adapters"):
        cli.trainer.fit(cli.model, cli.datamodule)
