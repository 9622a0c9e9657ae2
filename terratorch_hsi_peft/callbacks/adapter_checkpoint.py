"""Export the adapters of a PEFT run as a small safetensors file beside its checkpoints."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from terratorch_hsi_peft.callbacks.run_files import run_dir
from terratorch_hsi_peft.models.adapter_file import adapter_file_parts, save_adapter_file
from terratorch_hsi_peft.models.peft_model import has_adapters
from terratorch_hsi_peft.terratorch_compat import task_model
from terratorch_hsi_peft.utils.download import remove_stale_parts

__all__ = ["AdapterCheckpoint"]

logger = logging.getLogger(__name__)


class AdapterCheckpoint(Callback):
    """Write the run's adapters (and necks, decoder, heads) as safetensors files.

    - ``<dir>/adapters.safetensors`` at the end of ``fit``: the final weights.
    - ``<checkpoint>.adapters.safetensors`` beside each new best checkpoint of the trainer's
      (first) ``ModelCheckpoint`` (``epoch=3.ckpt`` -> ``epoch=3.adapters.safetensors``): the
      weights of that checkpoint. It is removed once ``ModelCheckpoint`` deletes its checkpoint
      (``save_top_k``), also when the file was written before a resume; so are the temporary
      files of a write that was killed.

    ``<dir>`` is ``dirpath`` if given, else the folder of the trainer's checkpoints (its
    ``ModelCheckpoint.dirpath``), else ``trainer.default_root_dir``. Files are written atomically
    and by global rank zero only. Load one with ``peft_config: {adapter_path: ...}``. Naming this
    callback by ``class_path`` in a YAML also imports the plugin (registers its factory)::

        trainer:
          callbacks:
            - class_path: terratorch_hsi_peft.callbacks.AdapterCheckpoint

    Args:
        dirpath: folder of ``adapters.safetensors``; None: beside the checkpoints.
        save_best: also write the adapters of each new best checkpoint beside it.
    """

    FINAL_NAME = "adapters.safetensors"
    SUFFIX = ".adapters.safetensors"

    def __init__(self, dirpath: str | os.PathLike | None = None, save_best: bool = True) -> None:
        super().__init__()
        self.dirpath = Path(dirpath) if dirpath is not None else None
        self.save_best = save_best
        self._exported_best: tuple[str, int] | None = None
        self._kept_checkpoints: frozenset[str] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and not has_adapters(task_model(pl_module)):
            raise ValueError(
                "AdapterCheckpoint needs a model with adapters: set model_factory: "
                "PEFTEncoderDecoderFactory and model_args.peft_config, or drop the callback for "
                "full fine-tuning (the LoadPlugin callback still loads the plugin)."
            )

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A resumed run restores the checkpoint callback's best path; its weights are not the
        # current ones, so only bests saved from now on are exported.
        self._exported_best = self._best_checkpoint(trainer)
        self._remove_orphans(trainer)  # left by an earlier run that this one resumes

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_) -> None:
        # Checkpoints are saved after a batch or validation; no optimizer step has happened since.
        self._export_new_best(trainer, pl_module)
        kept = frozenset(getattr(trainer.checkpoint_callback, "best_k_models", {}))
        if kept != self._kept_checkpoints:  # ModelCheckpoint saved, and may have deleted one
            self._kept_checkpoints = kept
            self._remove_orphans(trainer)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._export_new_best(trainer, pl_module)
        self._remove_orphans(trainer)
        if trainer.is_global_zero:
            path = run_dir(trainer, self.dirpath) / self.FINAL_NAME
            save_adapter_file(task_model(pl_module), path)
            rank_zero_info(
                f"AdapterCheckpoint: wrote {path} ({path.stat().st_size / 1e6:.2f} MB: "
                f"{adapter_file_parts(task_model(pl_module))})"
            )

    def _export_new_best(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        best = self._best_checkpoint(trainer)
        if not self.save_best or best is None or best == self._exported_best:
            return
        self._exported_best = best
        if not trainer.is_global_zero:
            return
        checkpoint = Path(best[0])
        path = checkpoint.with_name(checkpoint.stem + self.SUFFIX)
        save_adapter_file(task_model(pl_module), path)
        rank_zero_info(f"AdapterCheckpoint: wrote {path} (the adapters of {checkpoint.name})")

    def _remove_orphans(self, trainer: pl.Trainer) -> None:
        """Remove adapter files beside checkpoints that are gone, and killed writes' leftovers."""
        callback = trainer.checkpoint_callback
        dirpath = getattr(callback, "dirpath", None)
        if not trainer.is_global_zero or not dirpath or not os.path.isdir(dirpath):
            return
        extension = getattr(callback, "FILE_EXTENSION", ".ckpt")
        for adapters in Path(dirpath).glob("*" + self.SUFFIX):
            checkpoint = adapters.with_name(adapters.name.removesuffix(self.SUFFIX) + extension)
            if not checkpoint.exists():
                adapters.unlink(missing_ok=True)
                logger.info("Removed %s: its checkpoint %s is gone.", adapters, checkpoint.name)
        remove_stale_parts(dirpath, ".+" + re.escape(self.SUFFIX))

    @staticmethod
    def _best_checkpoint(trainer: pl.Trainer) -> tuple[str, int] | None:
        callback = trainer.checkpoint_callback
        path = getattr(callback, "best_model_path", "")
        if not path or not os.path.isfile(path):
            return None
        return path, os.stat(path).st_mtime_ns  # same name saved again counts as new
