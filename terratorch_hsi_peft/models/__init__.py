"""PEFT inside TerraTorch: the model factory, the adapter file, merge and unmerge.

Names with ``model`` (:func:`apply_peft_to_model`, :func:`save_model_adapters`,
:func:`load_model_adapters`, :func:`merge_model_adapters`) serve a whole TerraTorch model built
by :class:`PEFTEncoderDecoderFactory` (adapters on ``model.encoder``, necks, decoder and heads in
the file, either backend); the names without it in :mod:`terratorch_hsi_peft.adapters`
(``apply_peft``, ``save_adapters``, ...) serve any ``nn.Module``.
"""

from terratorch_hsi_peft.models.adapter_file import (
    load_model_adapters,
    save_model_adapters,
    trained_tensor_names,
)
from terratorch_hsi_peft.models.peft_factory import PEFTEncoderDecoderFactory
from terratorch_hsi_peft.models.peft_model import (
    apply_peft_to_model,
    has_adapters,
    merge_model_adapters,
    unmerge_model_adapters,
)
from terratorch_hsi_peft.models.spectral_path import SpectralPathClassifier, SpectralPathModel
from terratorch_hsi_peft.models.spectral_path_spec import SpectralPathSpec

__all__ = [
    "PEFTEncoderDecoderFactory",
    "SpectralPathClassifier",
    "SpectralPathModel",
    "SpectralPathSpec",
    "apply_peft_to_model",
    "has_adapters",
    "load_model_adapters",
    "merge_model_adapters",
    "save_model_adapters",
    "trained_tensor_names",
    "unmerge_model_adapters",
]
