"""The masked autoencoder registered with TerraTorch: ``spectralgpt_mae_vit_{base,large,huge}``.

They live in ``TERRATORCH_FULL_MODEL_REGISTRY``, so stock ``FullModelFactory`` builds them and
stock ``ReconstructionTask`` trains them::

    model:
      class_path: terratorch.tasks.ReconstructionTask
      init_args:
        model_factory: FullModelFactory
        model_args: {model: spectralgpt_mae_vit_base, num_bands: 12, img_size: 32}

One builder per size, made by :func:`~terratorch_hsi_peft.backbones.factories.sized_factory`
with its full typed signature: the checkpoint's arguments
(:func:`~terratorch_hsi_peft.backbones.factories.checkpoint_to_load`) and those of
:class:`SpectralGPTMAE`, with the size's defaults from
:data:`~terratorch_hsi_peft.backbones.spectralgpt.SIZES`. Every other ``model_args`` key reaches
the builder as a keyword; unknown keys are a TypeError listing the valid ones, and strings that
dotted command-line overrides leave (``"false"``, ``"0.75"``) are read as YAML scalars.
"""

from __future__ import annotations

from terratorch_hsi_peft.backbones.factories import (
    argument_docs,
    keyword_parameters,
    sized_factory,
)
from terratorch_hsi_peft.backbones.spectralgpt import SIZES, SpectralGPTEncoder
from terratorch_hsi_peft.pretraining.checkpoint import load_mae_checkpoint
from terratorch_hsi_peft.pretraining.mae import SpectralGPTMAE
from terratorch_hsi_peft.registry import register_full_model

__all__ = ["spectralgpt_mae_vit_base", "spectralgpt_mae_vit_huge", "spectralgpt_mae_vit_large"]


spectralgpt_mae_vit_base, spectralgpt_mae_vit_large, spectralgpt_mae_vit_huge = (
    register_full_model(
        sized_factory(
            "spectralgpt_mae_vit",
            size,
            module=__name__,
            construct=SpectralGPTMAE,
            load=load_mae_checkpoint,
            parameters=keyword_parameters(SpectralGPTMAE, defaults=SIZES[size]),
            docs=argument_docs(SpectralGPTEncoder, SpectralGPTMAE),
            where="model_args next to 'model'",
            summary="SpectralGPT ViT-{size} masked autoencoder, a TerraTorch full model. A "
            "checkpoint holds encoder and decoder, or is an encoder-only export (which starts "
            "a fresh decoder); it is loaded with a report.",
        )
    )
    for size in SIZES
)
