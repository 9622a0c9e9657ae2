"""Models and data of the benchmarks, built from the shipped experiment files plus overrides.

A benchmark measures what ships: it reads ``configs/experiments/<name>.yaml`` (the complete
files ``terratorch fit -c`` runs), changes only what the measurement needs (the split, the
epochs, a learning rate, the encoder size, a checkpoint) in the loaded dict, and builds the
task, datamodule and trainer with TerraTorch's own ``build_lightning_cli`` (what the
``terratorch`` command runs), without running a subcommand.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

__all__ = ["EXPERIMENTS", "REPO", "build", "load_experiment", "quiet"]

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "configs" / "experiments"


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


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Lightning's banners and per-fit warnings off; the builders' prints go to stderr."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "terratorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        yield
