"""Compositions of ``--config`` files that TerraTorch's parser rejects without naming the fix.

Checked before TerraTorch parses the ``terratorch`` command's arguments (installed when the plugin
is imported, see :func:`terratorch_hsi_peft.terratorch_compat.check_cli_arguments`):

- a method file of ``configs/methods/`` given with ``--config``: it holds the value of
  ``model_args.peft_config``, not a config of the run, and jsonargparse says only
  ``Subcommand 'fit' does not accept option 'peft_config_kwargs.target_modules'``;
- a task file of ``configs/`` without ``configs/base/trainer.yaml``: it sets the logger's
  ``init_args`` only, and jsonargparse says ``Parser key "trainer.logger": Does not validate``.

Each check fires only where the parse would fail anyway; it replaces jsonargparse's message with
one naming the fix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from terratorch_hsi_peft.adapters.config import PEFT_CONFIG_KEYS
from terratorch_hsi_peft.terratorch_compat import check_cli_arguments, install_or_warn

__all__ = ["config_files", "misplaced_config_message"]

_CONFIG_FLAGS = ("-c", "--config")
_LOGGER_FLAG = "--trainer.logger"


def config_files(argv: Sequence[str]) -> list[str]:
    """The values of ``-c`` / ``--config`` in ``argv`` (``--config FILE`` or ``--config=FILE``),
    in order, as given."""
    found = []
    for index, arg in enumerate(argv):
        flag, equals, value = arg.partition("=")
        if flag not in _CONFIG_FLAGS:
            continue
        if equals:
            found.append(value)
        elif index + 1 < len(argv):
            found.append(argv[index + 1])
    return found


def misplaced_config_message(argv: Sequence[str]) -> str | None:
    """What is wrong with the ``--config`` files of ``argv`` and how to fix it; None when neither
    mistake of the module docstring is made."""
    configs = [(path, _read(path)) for path in config_files(argv)]
    for path, content in configs:
        if _is_method_file(content):
            return _method_file_message(path)
    if not _logger_class_given(argv, [content for _, content in configs]):
        for path, content in configs:
            if _logger_init_args_only(content):
                return _task_alone_message(path)
    return None


def _read(path: str) -> Any:
    """The YAML content of ``path`` (None when unreadable: the parser reports that itself)."""
    try:
        return yaml.safe_load(Path(path).expanduser().read_text())
    except (OSError, yaml.YAMLError):
        return None


def _is_method_file(content: Any) -> bool:
    """A ``peft_config`` value: a mapping with ``method`` and only ``peft_config`` keys."""
    return (
        isinstance(content, Mapping) and "method" in content and set(content) <= {*PEFT_CONFIG_KEYS}
    )


def _logger(content: Any) -> Any:
    trainer = content.get("trainer") if isinstance(content, Mapping) else None
    return trainer.get("logger") if isinstance(trainer, Mapping) else None


def _logger_init_args_only(content: Any) -> bool:
    logger = _logger(content)
    return isinstance(logger, Mapping) and "init_args" in logger and "class_path" not in logger


def _logger_class_given(argv: Sequence[str], contents: list[Any]) -> bool:
    """Whether a file or a flag gives the logger other than as ``init_args`` alone (anywhere: the
    check must not fire on a composition jsonargparse might accept)."""
    for content in contents:
        logger = _logger(content)
        if logger is not None and not _logger_init_args_only(content):
            return True
    return any(
        arg.partition("=")[0] in (_LOGGER_FLAG, f"{_LOGGER_FLAG}.class_path") for arg in argv
    )


def _method_file_message(path: str) -> str:
    return (
        f"--config {path} is a method file: it holds the value of model_args.peft_config, not a "
        "config of the run, so TerraTorch's parser rejects its keys. Give it to that key "
        f"instead: --model.init_args.model_args.peft_config {path} (in place of --config "
        f"{path}), or write peft_config: {path} under model.init_args.model_args of the task "
        "file; or run a complete experiment file: terratorch fit -c "
        f"configs/experiments/<task>/{Path(path).stem}.yaml (docs/configuration.md)."
    )


def _task_alone_message(path: str) -> str:
    task = Path(path)
    # configs/<folder>/<task>.yaml has its complete files in configs/experiments/<folder>/<task>/.
    complete = task.parent.parent / "experiments" / task.parent.name / task.stem
    example = (
        complete / "<method>.yaml"
        if complete.is_dir()
        else "configs/experiments/<task>/<method>.yaml"
    )
    return (
        f"--config {path} sets trainer.logger.init_args but no --config gives the logger's "
        "class_path: a task file of configs/ is one part of a run, given after "
        "configs/base/trainer.yaml (trainer and logger) and a data file of configs/data/. Run "
        "the task's command of configs/manifest.yaml (terratorch fit --config "
        "configs/base/trainer.yaml --config configs/data/<data>.yaml --config "
        f"{path} ...), or a complete experiment file: terratorch fit -c {example} "
        "(docs/configuration.md)."
    )


install_or_warn(
    lambda: check_cli_arguments(misplaced_config_message),
    "Until then a method file given with --config, or a task file without "
    "configs/base/trainer.yaml, fails with jsonargparse's own error.",
)
