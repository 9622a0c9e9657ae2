"""SpectralGPT backbones; importing this package registers them with TerraTorch."""

from terratorch_hsi_peft.backbones.checkpoint import (
    CheckpointError,
    LoadReport,
    checkpoint_filter_fn,
    load_checkpoint,
)
from terratorch_hsi_peft.backbones.factories import (
    spectralgpt_vit_base,
    spectralgpt_vit_huge,
    spectralgpt_vit_large,
)
from terratorch_hsi_peft.backbones.spectralgpt import (
    GROUP_FUSIONS,
    SpectralGPTEncoder,
    TokenFeatures,
)

__all__ = [
    "GROUP_FUSIONS",
    "CheckpointError",
    "LoadReport",
    "SpectralGPTEncoder",
    "TokenFeatures",
    "checkpoint_filter_fn",
    "load_checkpoint",
    "spectralgpt_vit_base",
    "spectralgpt_vit_huge",
    "spectralgpt_vit_large",
]
