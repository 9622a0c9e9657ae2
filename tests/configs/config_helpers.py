"""Helpers of the config and end-to-end tests: the manifest, and config copies for offline runs."""

from __future__ import annotations

import itertools
import shlex
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]

CONFIGS = REPO_ROOT / "configs"
MANIFEST = CONFIGS / "manifest.yaml"


def manifest() -> dict[str, dict[str, Any]]:
    """The experiments of configs/manifest.yaml by name."""
    return yaml.safe_load(MANIFEST.read_text())["experiments"]


def command_args(name: str) -> list[str]:
    """The arguments after ``terratorch`` of an experiment's command (``fit --config ...``)."""
    argv = shlex.split(manifest()[name]["command"])
    assert argv[:2] == ["terratorch", "fit"], f"{name}: a command must start 'terratorch fit'"
    return argv[1:]


def config_paths(args: list[str]) -> list[Path]:
    """The files given to ``--config`` in ``args`` (relative to the repository root)."""
    return [REPO_ROOT / value for flag, value in itertools.pairwise(args) if flag == "--config"]


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
