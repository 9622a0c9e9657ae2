"""Class weights of the loss from the training labels, set on the task when ``fit`` starts."""

from __future__ import annotations

import logging

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn

from terratorch_hsi_peft.terratorch_compat import set_loss_class_weights

__all__ = ["BalancedClassWeights"]

logger = logging.getLogger(__name__)


class BalancedClassWeights(Callback):
    """Weights the task's cross-entropy by ``n_train / (K * n_class)`` from the training labels.

    When ``fit`` starts (after a checkpoint's split was restored, so a resumed run keeps its
    weights) the class counts of the datamodule's training pixels give one weight per class
    (:meth:`~terratorch_hsi_peft.datamodules.HyperspectralDataModule.class_weight_values`:
    scikit-learn's ``balanced`` weights; 0 for a class without training pixels), which the task's
    ``criterion`` then applies: rare classes count as much as frequent ones in the loss. A
    ``validate`` run gets them too, so its loss is the one ``fit`` reports.

    Needs the plugin's patch or scene datamodule and TerraTorch's ``ClassificationTask`` or
    ``SemanticSegmentationTask`` with ``loss: ce`` and no ``class_weights`` of its own (the task's
    ``class_weights`` list is the way to give fixed weights instead). The weights are not saved in
    checkpoints: a checkpoint loads into a task built without them.
    """

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Set the weights computed from the training split on the task's loss."""
        self._set_weights(trainer, pl_module)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """In a ``validate`` run, set them as ``fit`` does (its validation has them already)."""
        if trainer.state.fn == TrainerFn.VALIDATING:
            self._set_weights(trainer, pl_module)

    def _set_weights(self, trainer: Trainer, pl_module: LightningModule) -> None:
        name = type(self).__name__
        datamodule = trainer.datamodule
        if not hasattr(datamodule, "class_weight_values"):
            raise TypeError(
                f"{name} counts the training labels of HyperspectralPatchDataModule or "
                f"HyperspectralSceneDataModule; the datamodule is {type(datamodule).__name__}. "
                f"Use one of them, or remove {name} and give the task a class_weights list."
            )
        if pl_module.hparams.get("class_weights") is not None:
            raise ValueError(
                f"The task has class_weights and {name} computes them too; keep one of them "
                f"(remove {name} from trainer.callbacks or class_weights from the task)."
            )
        weights = datamodule.class_weight_values()
        set_loss_class_weights(pl_module, weights, user=name)
        logger.info("%s: loss class weights %s", name, [round(w, 4) for w in weights])
