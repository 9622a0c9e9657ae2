"""Where the plugin's callbacks write beside a run."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl


def run_dir(trainer: pl.Trainer, dirpath: Path | None) -> Path:
    """``dirpath`` when given, else the checkpoint folder, else the trainer's root folder."""
    if dirpath is not None:
        return dirpath
    checkpoints = getattr(trainer.checkpoint_callback, "dirpath", None)
    return Path(checkpoints) if checkpoints else Path(trainer.default_root_dir)
