"""SpectralGPT's masked-autoencoder pre-training inside TerraTorch.

Importing this package registers ``spectralgpt_mae_vit_{base,large,huge}`` in TerraTorch's
full-model registry (built by stock ``FullModelFactory``, trained by stock
``ReconstructionTask``).
"""

from terratorch_hsi_peft.pretraining.checkpoint import (
    encoder_state_dict,
    export_encoder,
    export_encoder_from_checkpoint,
    load_mae_checkpoint,
)
from terratorch_hsi_peft.pretraining.factories import (
    spectralgpt_mae_vit_base,
    spectralgpt_mae_vit_huge,
    spectralgpt_mae_vit_large,
)
from terratorch_hsi_peft.pretraining.mae import OFFICIAL_MASK_RATIO, SpectralGPTMAE

__all__ = [
    "OFFICIAL_MASK_RATIO",
    "SpectralGPTMAE",
    "encoder_state_dict",
    "export_encoder",
    "export_encoder_from_checkpoint",
    "load_mae_checkpoint",
    "spectralgpt_mae_vit_base",
    "spectralgpt_mae_vit_huge",
    "spectralgpt_mae_vit_large",
]
