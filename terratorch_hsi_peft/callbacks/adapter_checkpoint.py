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
from terratorch_hsi_peft.models.adapter_file import adapter_file_parts, save_model_adapters
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
      files of a write that was killed. This holds in the subfolders a ``filename`` with a
      ``/`` makes (a metric name such as ``{train/loss:.3f}``: ``epoch=3-train/loss=0.123.ckpt``);
      a subfolder left empty is removed.

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
        callback = trainer.checkpoint_callback
        # Without a monitor, save_top_k=1 replaces the one checkpoint and best_k_models stays
        # empty: the best path tells that one was saved (and its predecessor deleted).
        kept = frozenset(
            [*getattr(callback, "best_k_models", {}), getattr(callback, "best_model_path", "")]
        )
        if kept != self._kept_checkpoints:  # ModelCheckpoint saved, and may have deleted one
            self._kept_checkpoints = kept
            self._remove_orphans(trainer)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._export_new_best(trainer, pl_module)
        self._remove_orphans(trainer)
        if trainer.is_global_zero:
            path = run_dir(trainer, self.dirpath) / self.FINAL_NAME
            save_model_adapters(task_model(pl_module), path)
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
        save_model_adapters(task_model(pl_module), path)
        rank_zero_info(f"AdapterCheckpoint: wrote {path} (the adapters of {checkpoint.name})")

    def _remove_orphans(self, trainer: pl.Trainer) -> None:
        """Remove adapter files beside checkpoints that are gone, and killed writes' leftovers,
        in the checkpoint folder and the subfolders its ``filename`` can make."""
        callback = trainer.checkpoint_callback
        dirpath = getattr(callback, "dirpath", None)
        if not trainer.is_global_zero or not dirpath or not os.path.isdir(dirpath):
            return
        root = Path(dirpath)
        extension = getattr(callback, "FILE_EXTENSION", ".ckpt")
        emptied: set[Path] = set()  # folders something was removed from
        for folder in _checkpoint_folders(root, getattr(callback, "filename", None)):
            for adapters in folder.glob("*" + self.SUFFIX):
                name = adapters.name.removesuffix(self.SUFFIX) + extension
                checkpoint = adapters.with_name(name)
                if not checkpoint.exists():
                    adapters.unlink(missing_ok=True)
                    emptied.add(folder)
                    logger.info("Removed %s: its checkpoint %s is gone.", adapters, name)
            if remove_stale_parts(folder, ".+" + re.escape(self.SUFFIX)):
                emptied.add(folder)
            # A subfolder of a checkpoint's name, now empty: it goes with the checkpoint. Only
            # those this call removed something from, so a user's own empty folder stays.
            if folder in emptied and folder != root and _remove_if_empty(folder):
                emptied.add(folder.parent)

    @staticmethod
    def _best_checkpoint(trainer: pl.Trainer) -> tuple[str, int] | None:
        callback = trainer.checkpoint_callback
        path = getattr(callback, "best_model_path", "")
        if not path or not os.path.isfile(path):
            return None
        return path, os.stat(path).st_mtime_ns  # same name saved again counts as new


def _checkpoint_folders(root: Path, filename: str | None) -> list[Path]:
    """``root`` and its subfolders down to the depth ``ModelCheckpoint``'s ``filename`` makes.

    Each ``/`` of the template (a metric name such as ``train/loss``, or one typed) is a folder
    level of the checkpoint's path, so ``{epoch}-{train/loss:.3f}`` puts checkpoints one level
    down (``epoch=3-train/loss=0.123.ckpt``). Deeper folders are never the checkpoints', and are
    left alone. Deepest first, so that a folder emptied below is seen empty above.
    """
    depth = (filename or "").replace(os.sep, "/").count("/")
    folders = [root]
    for level in range(1, depth + 1):
        folders += [p for p in root.glob("/".join(["*"] * level)) if p.is_dir()]
    return folders[::-1]


def _remove_if_empty(folder: Path) -> bool:
    """Remove ``folder`` if nothing is left in it; whether it was removed."""
    try:
        folder.rmdir()  # fails unless empty: a folder holding anything stays
    except OSError:
        return False
    return True
