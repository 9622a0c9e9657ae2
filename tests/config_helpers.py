"""Helpers of the config and end-to-end tests: the manifest, and config copies for offline runs."""

from __future__ import annotations

import itertools
import re
import shlex
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]

CONFIGS = REPO_ROOT / "configs"
MANIFEST = CONFIGS / "manifest.yaml"
#: The adapter methods: every file of configs/methods/ (its stem is the method's name).
METHOD_FILES = sorted((CONFIGS / "methods").glob("*.yaml"))
#: What the shell does with "$(cat FILE)" in a manifest command: pass the file's contents.
_CAT = re.compile(r"^\$\(cat (\S+)\)$")


def finetuning() -> dict[str, Any]:
    """The ``finetuning`` block of configs/manifest.yaml: tasks and how a method joins one."""
    return yaml.safe_load(MANIFEST.read_text())["finetuning"]


def manifest() -> dict[str, dict[str, Any]]:
    """Every experiment of configs/manifest.yaml by name: each fine-tuning task with ``full``
    and with each method of configs/methods/, then the listed ``experiments``."""
    assert METHOD_FILES, "configs/methods/ holds no method file"
    rules = finetuning()
    assert rules["tasks"], "configs/manifest.yaml lists no fine-tuning task"
    experiments = {}
    for task, command in rules["tasks"].items():
        for method in ["full", *(path.stem for path in METHOD_FILES)]:
            choice = rules["full"] if method == "full" else rules["method"]
            output = rules["output"].replace("<task>", task)
            parts = (command, choice, output)
            experiments[f"{task}/{method}"] = {
                "command": " ".join(parts).replace("<method>", method),
                "task": task,
                "method": method,
            }
    listed = yaml.safe_load(MANIFEST.read_text())["experiments"]
    assert not experiments.keys() & listed.keys(), "an experiment is listed twice"
    return {**experiments, **listed}


def command_args(name: str) -> list[str]:
    """The arguments after ``terratorch`` of an experiment's command (``fit --config ...``), as
    the shell passes them (``"$(cat FILE)"`` becomes the file's contents)."""
    argv = shlex.split(manifest()[name]["command"])
    assert argv[:2] == ["terratorch", "fit"], f"{name}: a command must start 'terratorch fit'"
    return [
        (REPO_ROOT / match[1]).read_text() if (match := _CAT.match(arg)) else arg
        for arg in argv[1:]
    ]


def config_paths(args: list[str]) -> list[Path]:
    """The files given to ``--config`` in ``args`` (relative to the repository root)."""
    return [REPO_ROOT / value for flag, value in itertools.pairwise(args) if flag == "--config"]


def flag_value(args: list[str], flag: str) -> str | None:
    """The value of the last ``flag`` in ``args`` (None without one)."""
    values = [value for given, value in itertools.pairwise(args) if given == flag]
    return values[-1] if values else None


def peft_config(args: list[str]) -> dict[str, Any] | None:
    """The ``peft_config`` an experiment's arguments give (None: full fine-tuning)."""
    value = flag_value(args, "--model.init_args.model_args.peft_config")
    if value is not None:
        return yaml.safe_load(value)
    files = [yaml.safe_load(p.read_text()) for p in config_paths(args)]
    given = [f["model"]["init_args"].get("model_args") for f in files if "model" in f]
    return next((m["peft_config"] for m in reversed(given) if m and "peft_config" in m), None)


def offline_args(args: list[str], folder: Path, **model_args: Any) -> list[str]:
    """``args`` with every config that sets ``model_args`` copied into ``folder`` and changed.

    A dotted ``--model.init_args.model_args.<key>`` override reaches the factory as a *string*
    (``model_args`` is an untyped dict), so typed changes such as ``backbone_pretrained: false``
    go into copies of the files instead. Paths become absolute so tests may run elsewhere.
    """
    out = []
    for flag, value in itertools.pairwise(["", *args]):
        if flag != "--config":
            out.append(value)
            continue
        path = REPO_ROOT / value
        config = yaml.safe_load(path.read_text())
        given = config.get("model", {}).get("init_args", {}).get("model_args")
        if given is not None and model_args:
            given.update(model_args)
            path = folder / f"{len(out)}_{path.name}"
            path.write_text(yaml.safe_dump(config, sort_keys=False))
        out.append(str(path))
    return out
