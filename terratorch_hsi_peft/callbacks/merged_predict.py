"""Predict with the adapters folded into the encoder weights: the base model's cost, no more."""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from terratorch_hsi_peft.models.peft_model import (
    has_adapters,
    merge_model_adapters,
    unmerge_model_adapters,
)
from terratorch_hsi_peft.terratorch_compat import task_model

__all__ = ["MergeAdaptersForPredict"]


class MergeAdaptersForPredict(Callback):
    """Merge the adapters before ``predict`` and unmerge them after (also when predict fails).

    Outputs equal the unmerged model's up to float rounding (about 1e-6 relative in float32).
    Add it to the callbacks of a ``terratorch predict`` run::

        trainer:
          callbacks:
            - class_path: terratorch_hsi_peft.callbacks.MergeAdaptersForPredict

    or on the command line:
    ``--trainer.callbacks+=terratorch_hsi_peft.callbacks.MergeAdaptersForPredict``.
    """

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        model = task_model(pl_module)
        if not has_adapters(model):
            raise ValueError(
                "MergeAdaptersForPredict needs a model with adapters (model_factory: "
                "PEFTEncoderDecoderFactory with a peft_config); drop the callback otherwise."
            )
        merge_model_adapters(model)

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        unmerge_model_adapters(task_model(pl_module))

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        model = task_model(pl_module)
        if trainer.predicting and has_adapters(model):
            unmerge_model_adapters(model)
