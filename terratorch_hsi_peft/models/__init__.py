"""PEFT inside TerraTorch: the model factory, the adapter file, merge and unmerge."""

from terratorch_hsi_peft.models.adapter_file import (
    load_adapter_file,
    save_adapter_file,
    trained_tensor_names,
)
from terratorch_hsi_peft.models.peft_config import PEFT_CONFIG_KEYS, PeftSpec
from terratorch_hsi_peft.models.peft_factory import PEFTEncoderDecoderFactory
from terratorch_hsi_peft.models.peft_model import (
    attach_adapters,
    has_adapters,
    merge_model_adapters,
    unmerge_model_adapters,
)
from terratorch_hsi_peft.models.spectral_path import SpectralPathClassifier, SpectralPathModel

__all__ = [
    "PEFT_CONFIG_KEYS",
    "PEFTEncoderDecoderFactory",
    "PeftSpec",
    "SpectralPathClassifier",
    "SpectralPathModel",
    "attach_adapters",
    "has_adapters",
    "load_adapter_file",
    "merge_model_adapters",
    "save_adapter_file",
    "trained_tensor_names",
    "unmerge_model_adapters",
]
