"""Every experiment of configs/manifest.yaml builds its model through TerraTorch's real CLI.

``build_lightning_cli`` is what the ``terratorch`` command runs; with ``run=False`` it parses the
composed configs and instantiates trainer, datamodule and task (so the model) without training.
``backbone_pretrained`` is switched off (nothing can be downloaded here) and the data root
points at the shared Indian Pines files; one batch of the real scene then goes through the model.
"""

from __future__ import annotations

import sys

import pytest
import torch
from config_helpers import CONFIGS, REPO_ROOT, command_args, config_paths, manifest, offline_args
from terratorch.cli_tools import build_lightning_cli

EXPERIMENTS = sorted(manifest())


def test_manifest_lists_every_experiment_file_and_only_existing_files():
    listed = {path for name in EXPERIMENTS for path in config_paths(command_args(name))}
    missing = sorted(str(p.relative_to(REPO_ROOT)) for p in listed if not p.is_file())
    assert not missing, f"manifest commands name missing files: {missing}"
    experiment_files = {
        p for p in CONFIGS.rglob("*.yaml") if p.parent.name not in ("base", "data")
    } - {CONFIGS / "manifest.yaml"}
    unlisted = sorted(str(p.relative_to(REPO_ROOT)) for p in experiment_files - listed)
    assert not unlisted, f"experiment files no manifest command runs: {unlisted}"


def test_every_experiment_has_its_own_output_folder():
    folders = {}
    for name in EXPERIMENTS:
        experiment = config_paths(command_args(name))[-1]
        text = experiment.read_text()
        assert f"default_root_dir: outputs/{name}\n" in text, name
        assert f"dirpath: outputs/{name}/checkpoints," in text, name
        folders[name] = name
    assert len(set(folders.values())) == len(EXPERIMENTS)


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_builds_its_model_and_runs_a_real_batch(
    name, tmp_path, monkeypatch, shared_data
):
    args = offline_args(command_args(name), tmp_path, backbone_pretrained=False)
    monkeypatch.chdir(tmp_path)  # the trainer's output folders are relative paths
    monkeypatch.setattr(sys, "argv", ["terratorch"])  # as the command sees it: args only
    root = shared_data / "indian_pines"
    cli = build_lightning_cli([*args[1:], "--data.init_args.root", str(root)], run=False)

    model_args = cli.model.hparams["model_args"]
    datamodule = cli.datamodule
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
    if "classification" in name or "paper" in name or "quickstart" in name:
        assert logits.shape == (2, classes)
    else:
        assert logits.shape == (2, classes, *batch["image"].shape[-2:])
    assert torch.isfinite(logits).all()
