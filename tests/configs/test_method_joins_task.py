"""The ways a TerraTorch user joins a method file to a task file, through TerraTorch's CLI.

``build_lightning_cli`` is what the ``terratorch`` command runs; ``sys.argv`` is set as the
command has it. A tiny encoder (width 48, one block) keeps each build fast. The CLI reports an
error of the task's build as a ValueError holding the factory's message. The tests named
``through_the_terratorch_command`` run the real command (about 20 s each): the plugin is then
imported as an installed one is, which is what installs its check of the ``--config`` files.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest
import safetensors.torch
import yaml
from config_helpers import REPO_ROOT, finetuning, offline_args
from terratorch.cli_tools import build_lightning_cli
from terratorch_cli import terratorch, terratorch_fails

from terratorch_hsi_peft.adapters import adapter_layers

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


def test_a_method_file_given_with_config_names_the_fix(task_args, monkeypatch, capsys):
    # Without the plugin's check jsonargparse only says "Subcommand 'fit' does not accept option
    # 'peft_config_kwargs.target_modules'".
    with pytest.raises(SystemExit) as stopped:
        build([*task_args, "-c", "configs/methods/lora.yaml"], monkeypatch)
    assert stopped.value.code == 2  # the parser's own exit status for a bad argument
    fix = "--model.init_args.model_args.peft_config configs/methods/lora.yaml"
    assert re.search(
        rf"--config configs/methods/lora.yaml is a method file.*{fix}", capsys.readouterr().err
    )


def test_a_task_file_alone_names_the_files_it_joins(tmp_path, monkeypatch, capsys):
    (tmp_path / "configs").symlink_to(REPO_ROOT / "configs")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        build(["fit", "--config=configs/indian_pines/classification.yaml"], monkeypatch)
    assert stopped.value.code == 2
    assert re.search(
        r"no --config gives the logger's class_path.*configs/base/trainer.yaml.*terratorch fit -c "
        r"configs/experiments/indian_pines/classification/<method>.yaml",
        capsys.readouterr().err,
    )


def test_peft_config_as_a_path_inside_the_task_file(task_args, tmp_path, monkeypatch):
    # The other fix the method-file message names: peft_config: <path> under model_args.
    task = next(Path(arg) for arg in task_args if arg.endswith("classification.yaml"))
    config = yaml.safe_load(task.read_text())
    config["model"]["init_args"]["model_args"]["peft_config"] = "configs/methods/lora.yaml"
    with_method = tmp_path / "classification_lora.yaml"
    with_method.write_text(yaml.safe_dump(config, sort_keys=False))
    args = [str(with_method) if arg == str(task) else arg for arg in task_args]
    layers = adapter_layers(build(args, monkeypatch).model.model.encoder)
    assert {type(layer).__name__ for layer in layers.values()} == {"LoRALinear"}


# Item 1 of issue 32 through the real command: each way fails naming the fix, or works.
FIXES = {
    "method_file_as_config": (
        ["-c", "configs/methods/lora.yaml"],
        r"is a method file.*--model.init_args.model_args.peft_config configs/methods/lora.yaml",
    ),
    "later_config_replacing_model_args": (
        ["-c", "add_lora.yaml"],
        r"model_args has no 'backbone' but has a peft_config: the later --config add_lora.yaml",
    ),
}


@pytest.mark.parametrize("attempt", sorted(FIXES))
def test_through_the_terratorch_command_each_mistake_names_the_fix(task_args, tmp_path, attempt):
    extra, message = FIXES[attempt]
    method = yaml.safe_load((REPO_ROOT / "configs/methods/lora.yaml").read_text())
    snippet = {"model": {"init_args": {"model_args": {"peft_config": method}}}}
    (tmp_path / "add_lora.yaml").write_text(yaml.safe_dump(snippet))
    output = terratorch_fails([*task_args, *extra], cwd=tmp_path)
    assert re.search(message, output.replace("\n", " ")), output[-3000:]


def test_through_the_terratorch_command_a_task_file_alone_names_the_fix(tmp_path):
    (tmp_path / "configs").symlink_to(REPO_ROOT / "configs")
    output = terratorch_fails(["fit", "-c", "configs/indian_pines/classification.yaml"], tmp_path)
    # The fix: join configs/base/trainer.yaml, or run the task's complete experiment file.
    fix = r"configs/base/trainer.yaml.*fit -c configs/experiments/indian_pines/classification/"
    assert re.search(fix, output.replace("\n", " ")), output[-3000:]


def test_through_the_terratorch_command_a_method_path_fits(task_args, tmp_path):
    tiny_run = [
        *("--trainer.max_steps", "1", "--trainer.limit_train_batches", "1"),
        *("--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0"),
        *("--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.name", "run"),
        *("--model.init_args.model_args.peft_config", "configs/methods/lora.yaml"),
    ]
    terratorch([*task_args, *tiny_run], cwd=tmp_path)
    (adapters,) = (tmp_path / "outputs").rglob("adapters.safetensors")
    names = safetensors.torch.load_file(adapters).keys()
    assert {name for name in names if ".lora_" in name}, sorted(names)
