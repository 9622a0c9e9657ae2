"""Models and data of the benchmarks, built from the shipped experiment files plus overrides.

A benchmark measures what ships: it reads ``configs/experiments/<name>.yaml`` (the complete
files ``terratorch fit -c`` runs), changes only what the measurement needs (the split, the
epochs, a learning rate, the encoder size, a checkpoint) in the loaded dict, and builds the
task, datamodule and trainer with TerraTorch's own ``build_lightning_cli`` (what the
``terratorch`` command runs), without running a subcommand.

The overrides are dotted keys (:func:`override`); :func:`encoder_size` is the one every timing
benchmark shares (the encoder's width, depth and heads, with the layers the segmentation neck
reads spread over the new depth as the shipped files spread them). A benchmark that times a
model without data builds the task alone (:func:`build_model`), one that times the data
pipeline the datamodule alone (:func:`build_datamodule`).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import sys
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "DELETE",
    "EXPERIMENTS",
    "REPO",
    "build",
    "build_datamodule",
    "build_model",
    "encoder_size",
    "load_experiment",
    "override",
    "quiet",
    "spread_layers",
]

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "configs" / "experiments"
#: An :func:`override` value that removes the key (a part the measurement leaves out).
DELETE = object()


def load_experiment(name: str) -> dict[str, Any]:
    """The shipped experiment file ``configs/experiments/<name>.yaml`` as a dict.

    Raises:
        FileNotFoundError: no such experiment (the message lists the shipped ones).
    """
    path = EXPERIMENTS / f"{name}.yaml"
    if not path.is_file():
        names = sorted(
            str(p.relative_to(EXPERIMENTS).with_suffix("")) for p in EXPERIMENTS.rglob("*.yaml")
        )
        raise FileNotFoundError(f"No experiment {name!r} in {EXPERIMENTS}; shipped: {names}")
    return yaml.safe_load(path.read_text())


def build(config: dict[str, Any], folder: Path) -> Any:
    """TerraTorch's ``LightningCLI`` of ``config`` (written to ``folder/experiment.yaml``).

    The CLI is built without running a subcommand: ``cli.model``, ``cli.datamodule`` and
    ``cli.trainer`` are ready for ``cli.trainer.fit(cli.model, cli.datamodule)``.
    """
    from terratorch.cli_tools import build_lightning_cli

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "experiment.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return build_lightning_cli(["-c", str(path)], run=False)


def override(config: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """Set each dotted key of ``changes`` in ``config`` (in place); returns ``config``.

    ``"model.init_args.model_args.backbone_depth": 2`` sets one value; a part that is an integer
    indexes a list (``"model.init_args.model_args.necks.0.indices"``); the value :data:`DELETE`
    removes the key. Every part but the last must exist, so that a key renamed in the shipped
    files stops the benchmark instead of adding a setting nothing reads; the last may be new (a
    setting the file leaves at its default).

    Raises:
        KeyError: a part of a key is missing (the message names the key and the part).
    """
    for dotted, value in changes.items():
        parts = dotted.split(".")
        node: Any = config
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            key: Any = int(part) if isinstance(node, list) and part.lstrip("-").isdigit() else part
            if isinstance(node, list) and not isinstance(key, int):
                raise KeyError(f"override {dotted!r}: {'.'.join(parts[:depth])} is a list")
            present = key in node if isinstance(node, dict) else -len(node) <= key < len(node)
            if not present and not (last and isinstance(node, dict) and value is not DELETE):
                where = ".".join(parts[:depth]) or "the config"
                raise KeyError(f"override {dotted!r}: {where} has no {part!r}")
            if not last:
                node = node[key]
            elif value is DELETE:
                del node[key]
            else:
                node[key] = value
    return config


def spread_layers(count: int, depth: int) -> list[int]:
    """``count`` encoder layers evenly spread over ``depth`` blocks, ending with the last.

    How the shipped segmentation files pick the layers their decoder reads: ``[2, 5, 8, 11]`` for
    4 of 12 blocks; repeated layers on a shallower encoder (``[0, 0, 0, 1]`` for 4 of 2).
    """
    return [max(0, (k + 1) * depth // count - 1) for k in range(count)]


def encoder_size(
    config: dict[str, Any],
    embed_dim: int,
    depth: int,
    num_heads: int,
    patch_size: int | None = None,
) -> dict[str, Any]:
    """Give the experiment's SpectralGPT encoder another size (in place); returns ``config``.

    Sets ``backbone_embed_dim``, ``backbone_depth``, ``backbone_num_heads`` (and
    ``backbone_patch_size`` when given) and re-spreads the layers of a ``SelectIndices`` neck over
    the new depth (:func:`spread_layers`), which would otherwise name blocks the encoder lacks.
    """
    args = config["model"]["init_args"]["model_args"]
    changes: dict[str, Any] = {
        "backbone_embed_dim": embed_dim,
        "backbone_depth": depth,
        "backbone_num_heads": num_heads,
    }
    if patch_size is not None:
        changes["backbone_patch_size"] = patch_size
    for index, neck in enumerate(args.get("necks", [])):
        if neck.get("name") == "SelectIndices":
            changes[f"necks.{index}.indices"] = spread_layers(len(neck["indices"]), depth)
    override(args, changes)
    return config


def build_model(config: dict[str, Any]) -> Any:
    """The task (LightningModule) of ``config["model"]`` alone: no datamodule, no trainer.

    For benchmarks that time a model on synthetic batches, so that they need no data. The task is
    ``class_path(**init_args)``, as ``build`` instantiates it, after ``seed_everything`` (as
    ``build``) when the config sets it.
    """
    import terratorch_hsi_peft  # noqa: F401  (registers the backbone and the factory)

    if isinstance(config.get("seed_everything"), int):
        from lightning.pytorch import seed_everything

        seed_everything(config["seed_everything"], verbose=False)
    model = config["model"]
    module, _, name = model["class_path"].rpartition(".")
    task_class = getattr(importlib.import_module(module), name)
    return task_class(**model.get("init_args", {}))


def build_datamodule(config: dict[str, Any]) -> Any:
    """The datamodule of ``config["data"]`` alone: no task, no trainer.

    For benchmarks that time the data pipeline without the experiment's model: the datamodule
    is ``class_path(**init_args)``, the arguments as the file gives them (the plugin's
    datamodules take the file's ``split`` and ``train_transform`` as plain dicts and lists).
    """
    data = config["data"]
    module, _, name = data["class_path"].rpartition(".")
    datamodule_class = getattr(importlib.import_module(module), name)
    return datamodule_class(**data.get("init_args", {}))


#: The loggers :func:`quiet` turns down while a benchmark builds and fits.
LOUD_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "terratorch")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Lightning's banners and per-fit warnings off; the builders' prints go to stderr.

    The loggers' levels are restored on exit: the plugin logs through Lightning's
    ``rank_zero_info``, whose logger sits under ``lightning.pytorch``, and a level left at ERROR
    would silence it for the rest of the process.
    """
    loggers = [logging.getLogger(name) for name in LOUD_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
