"""Write each experiment of ``configs/manifest.yaml`` as one complete TerraTorch config file.

The manifest composes a run from several files (trainer, data, task, method) plus flags; a
TerraTorch user expects one file per run, as TerraTorch's own ``examples/confs/``. This module
merges each composition as ``terratorch`` would and writes it to
``configs/experiments/<name>.yaml``, runnable as it is::

    python -m terratorch_hsi_peft.configs_gen            # (re)write configs/experiments/
    python -m terratorch_hsi_peft.configs_gen --check    # exit 1 when a file is stale

Run it from the repository root (or give ``--root``). The composed files stay the source: edit
them or the manifest, then regenerate (tests/configs/test_experiment_files.py fails on a stale
file).
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import shlex
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = ["EXPERIMENTS_DIR", "compose", "experiment_commands", "generate", "main", "render"]

#: Where the single-file experiments go, relative to the repository root.
EXPERIMENTS_DIR = Path("configs/experiments")
#: What the shell does with "$(cat FILE)" in a manifest command: pass the file's contents.
_CAT = re.compile(r"^\$\(cat (\S+)\)$")
#: Keys a later config replaces whole instead of merging: TerraTorch's untyped model_args.
_REPLACED = frozenset({"model_args"})


def experiment_commands(root: Path) -> dict[str, str]:
    """Every experiment's ``terratorch fit ...`` command of ``root/configs/manifest.yaml``:
    each fine-tuning task with ``full`` and with each ``configs/methods/*.yaml``, then the listed
    ``experiments``."""
    manifest = yaml.safe_load((root / "configs" / "manifest.yaml").read_text())
    rules = manifest["finetuning"]
    methods = ["full", *sorted(p.stem for p in (root / "configs" / "methods").glob("*.yaml"))]
    commands = {}
    for task, command in rules["tasks"].items():
        for method in methods:
            choice = rules["full"] if method == "full" else rules["method"]
            output = rules["output"].replace("<task>", task)
            commands[f"{task}/{method}"] = " ".join((command, choice, output)).replace(
                "<method>", method
            )
    listed = {name: entry["command"] for name, entry in manifest["experiments"].items()}
    clash = sorted(commands.keys() & listed.keys())
    if clash:
        raise ValueError(f"configs/manifest.yaml lists {clash} twice; rename one.")
    return {**commands, **listed}


def compose(command: str, root: Path) -> dict[str, Any]:
    """The config ``terratorch`` parses from ``command``: its ``--config`` files merged in order
    (mappings key by key, lists and ``model_args`` replaced), then its dotted flags."""
    argv = shlex.split(command)
    if argv[:2] != ["terratorch", "fit"]:
        raise ValueError(f"a manifest command must start 'terratorch fit': {command!r}")
    config: dict[str, Any] = {}
    args = argv[2:]
    if len(args) % 2:
        raise ValueError(f"every flag of a manifest command takes one value: {command!r}")
    for flag, value in zip(args[::2], args[1::2], strict=True):
        if match := _CAT.match(value):
            value = (root / match[1]).read_text()
        if flag in ("--config", "-c"):
            _merge(config, yaml.safe_load((root / value).read_text()))
        elif flag.startswith("--"):
            *parents, key = flag[2:].split(".")
            node = config
            for part in parents:
                node = node.setdefault(part, {})
            node[key] = yaml.safe_load(value)
        else:
            raise ValueError(f"unexpected argument {flag!r} in {command!r}")
    return config


def _merge(into: dict[str, Any], update: Mapping[str, Any]) -> None:
    """Merge ``update`` into ``into`` as jsonargparse merges a later ``--config``."""
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict) and key not in _REPLACED:
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


def render(name: str, command: str, root: Path) -> str:
    """The text of ``configs/experiments/<name>.yaml``: a header, then the composed config."""
    path = EXPERIMENTS_DIR / f"{name}.yaml"
    header = (
        f"# {name}: generated from configs/manifest.yaml by\n"
        "#   python -m terratorch_hsi_peft.configs_gen\n"
        "# Do not edit: change the composed files or the manifest, then regenerate. It merges\n"
        f"#   {command}\n"
        "# Run from the repository root (outputs/ and relative paths are resolved there), with\n"
        "# HSI_DATA the folder of the scene folders (or add --data.init_args.root <folder>):\n"
        f"#   terratorch fit -c {path.as_posix()}\n"
        "# then `test` / `predict` the same way with --ckpt_path <its checkpoints/last.ckpt>.\n"
    )
    body = yaml.safe_dump(compose(command, root), sort_keys=False, width=100)
    return header + body


def generate(root: Path) -> dict[Path, str]:
    """Every experiment file's path (relative to ``root``) and text."""
    return {
        EXPERIMENTS_DIR / f"{name}.yaml": render(name, command, root)
        for name, command in experiment_commands(root).items()
    }


def _read(path: Path) -> str | None:
    return path.read_text() if path.is_file() else None


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    """Write (or with ``--check`` compare) ``configs/experiments/``; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="repository root")
    parser.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args(argv)
    root = args.root
    if not (root / "configs" / "manifest.yaml").is_file():
        parser.error(f"{root} has no configs/manifest.yaml; run from the repository root.")
    wanted = generate(root)
    present = {p.relative_to(root) for p in (root / EXPERIMENTS_DIR).rglob("*.yaml")}
    stale = sorted(
        p
        for p, text in wanted.items()
        if not (root / p).is_file() or (root / p).read_text() != text
    )
    extra = sorted(present - wanted.keys())
    if args.check:
        for path in stale:
            print(f"stale: {path}")
        for path in extra:
            print(f"not in the manifest: {path}")
        return 1 if stale or extra else 0
    for path in stale:
        _write_atomic(root / path, wanted[path])
    for path in extra:
        (root / path).unlink()
    print(f"{len(stale)} of {len(wanted)} experiment files written, {len(extra)} removed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
