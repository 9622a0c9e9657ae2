"""Export the pre-trained SpectralGPT encoder beside the checkpoints of a pre-training run."""

from __future__ import annotations

import os
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from terratorch_hsi_peft.callbacks.run_files import run_dir
from terratorch_hsi_peft.pretraining import SpectralGPTMAE, export_encoder
from terratorch_hsi_peft.terratorch_compat import task_model

__all__ = ["EncoderExport"]


class EncoderExport(Callback):
    """At the end of ``fit``, write the MAE's encoder as ``<dir>/encoder.pth``.

    The file is in the official SpectralGPT layout (``{"model": weights, "args": ...}``, see
    :func:`~terratorch_hsi_peft.pretraining.export_encoder`), so the second step of the recipe
    loads it with ``backbone_ckpt_path: <dir>/encoder.pth`` and the same encoder sizes, nothing
    missing. When the datamodule has fitted band routes (``HyperspectralPretrainDataModule``),
    they are stored with it under ``scenes`` and ``band_routes``.

    ``<dir>`` is ``dirpath`` if given, else the folder of the trainer's checkpoints (its
    ``ModelCheckpoint.dirpath``), else ``trainer.default_root_dir``. Written atomically, by global
    rank zero only. An encoder whose weights hold NaN or Inf (the pre-training diverged) is not
    written: ``fit`` ends with an error naming them, and a file already there is left as it was.
    Naming this callback by ``class_path`` also imports the plugin::

        trainer:
          callbacks:
            - class_path: terratorch_hsi_peft.callbacks.EncoderExport

    Args:
        dirpath: folder of the file; None: beside the checkpoints.
        filename: the file's name.
    """

    def __init__(
        self, dirpath: str | os.PathLike | None = None, filename: str = "encoder.pth"
    ) -> None:
        super().__init__()
        self.dirpath = Path(dirpath) if dirpath is not None else None
        self.filename = filename

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and not isinstance(task_model(pl_module), SpectralGPTMAE):
            raise ValueError(
                "EncoderExport exports the encoder of a SpectralGPT masked autoencoder: use it "
                "with ReconstructionTask, model_factory: FullModelFactory and model_args.model: "
                "spectralgpt_mae_vit_*; drop it from other runs."
            )

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        datamodule = getattr(trainer, "datamodule", None)
        state = datamodule.state_dict() if datamodule is not None else {}
        extra = {key: state[key] for key in ("scenes", "band_routes") if key in state}
        target = run_dir(trainer, self.dirpath) / self.filename
        path = export_encoder(task_model(pl_module), target, extra)
        rank_zero_info(f"EncoderExport: wrote {path} (load it with backbone_ckpt_path)")
