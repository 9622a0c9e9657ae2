"""The ways a TerraTorch user joins a method file to a task file, through TerraTorch's CLI.

``build_lightning_cli`` is what the ``terratorch`` command runs; ``sys.argv`` is set as the
command has it. A tiny encoder (width 48, one block) keeps each build fast. The CLI reports an
error of the task's build as a ValueError holding the factory's message.
"""

from __future__ import annotations

import shlex
import sys

import pytest
import yaml
from config_helpers import REPO_ROOT, finetuning, offline_args
from terratorch.cli_tools import build_lightning_cli

from terratorch_hsi_peft.peft import adapter_layers

pytestmark = pytest.mark.slow  # each build imports and parses TerraTorch's CLI (a few s)

TINY = {"backbone_pretrained": False, "backbone_embed_dim": 48, "backbone_depth": 1}


@pytest.fixture
def task_args(tmp_path, monkeypatch, shared_data) -> list[str]:
    """The classification task's ``fit`` arguments with a tiny encoder, run from a folder whose
    ``configs`` is the repository's (relative paths as a user types them)."""
    (tmp_path / "configs").symlink_to(REPO_ROOT / "configs")
    monkeypatch.chdir(tmp_path)
    command = shlex.split(finetuning()["tasks"]["indian_pines/classification"])
    args = offline_args(command[1:], tmp_path, **TINY)
    return [*args, "--data.init_args.root", str(shared_data / "indian_pines")]


def build(args: list[str], monkeypatch):
    """Parse ``fit`` ``args`` and build the task (the command's argv names the config files)."""
    monkeypatch.setattr(sys, "argv", ["terratorch", *args])
    assert args[0] == "fit"
    return build_lightning_cli(args[1:], run=False)  # run=False: no subcommand


def test_peft_config_takes_the_path_of_a_method_file(task_args, monkeypatch):
    args = [*task_args, "--model.init_args.model_args.peft_config", "configs/methods/lora.yaml"]
    cli = build(args, monkeypatch)
    layers = adapter_layers(cli.model.model.encoder)
    assert sorted(layers) == ["blocks.0.attn.q", "blocks.0.attn.v"]
    assert {type(layer).__name__ for layer in layers.values()} == {"LoRALinear"}


def test_a_missing_method_file_names_the_path_and_the_fix(task_args, monkeypatch):
    args = [*task_args, "--model.init_args.model_args.peft_config", "configs/methods/nope.yaml"]
    with pytest.raises(
        ValueError,
        match=r"peft_config 'configs/methods/nope.yaml' is not a file .*configs/methods/krona_plus",
    ):
        build(args, monkeypatch)


def test_a_later_config_replacing_model_args_is_named(task_args, tmp_path, monkeypatch):
    # The README's two-line snippet as a file of its own: model_args holds only peft_config.
    method = yaml.safe_load((REPO_ROOT / "configs/methods/lora.yaml").read_text())
    extra = tmp_path / "add_lora.yaml"
    snippet = {"model": {"init_args": {"model_args": {"peft_config": method}}}}
    extra.write_text(yaml.safe_dump(snippet))
    with pytest.raises(
        ValueError,
        match=(
            rf"model_args has no 'backbone' but has a peft_config: the later --config {extra} "
            r"sets model_args.*--model.init_args.model_args.peft_config configs/methods/"
        ),
    ):
        build([*task_args, "--config", str(extra)], monkeypatch)


def test_a_method_file_given_with_config_fails_as_troubleshooting_says(
    task_args, monkeypatch, capsys
):
    # jsonargparse stops before any plugin code runs: the page explains its message.
    args = [*task_args, "-c", "configs/methods/lora.yaml"]
    monkeypatch.setattr(sys, "argv", ["terratorch", *args])
    with pytest.raises(SystemExit):
        build_lightning_cli(args)  # with the subcommand: the parse error the command prints
    message = "Subcommand 'fit' does not accept option 'peft_config_kwargs.target_modules'"
    assert message in capsys.readouterr().err
    assert f"| `{message}` |" in (REPO_ROOT / "docs" / "troubleshooting.md").read_text()
