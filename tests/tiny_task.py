"""A one-block SpectralGPT classification task and a one-step CPU trainer, for the tests that
drive TerraTorch's task through Lightning (callbacks, TerraTorch touch points)."""

from __future__ import annotations

from lightning.pytorch import Trainer
from terratorch.tasks import ClassificationTask

#: 5 bands, 8x8 inputs, 3 classes: the smallest model the stock factory builds.
MODEL_ARGS = {
    "backbone": "spectralgpt_vit_base",
    "backbone_depth": 1,
    "backbone_embed_dim": 16,
    "backbone_num_heads": 2,
    "backbone_num_bands": 5,
    "backbone_img_size": 8,
    "backbone_out_indices": [-1],
    "decoder": "IdentityDecoder",
    "num_classes": 3,
}


def tiny_task(**kwargs) -> ClassificationTask:
    """The stock ClassificationTask on :data:`MODEL_ARGS`; ``kwargs`` go to the task."""
    return ClassificationTask(
        model_factory="EncoderDecoderFactory", model_args=MODEL_ARGS, **kwargs
    )


def cpu_trainer(callbacks: list, max_steps: int = 1) -> Trainer:
    """A quiet CPU trainer: ``max_steps`` steps, one validation batch, nothing written."""
    return Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
