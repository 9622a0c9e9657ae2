"""terratorch-hsi-peft: SpectralGPT and parameter-efficient fine-tuning for hyperspectral images.

Importing this package registers the plugin's backbones, model factory and masked autoencoders
with TerraTorch's registries (once; see :mod:`terratorch_hsi_peft.registry`). An installed plugin
is imported as soon as TerraTorch has finished importing (see :mod:`terratorch_hsi_peft_autoload`);
a TerraTorch YAML also triggers the import by naming any plugin class by ``class_path``.
"""

from importlib.metadata import PackageNotFoundError, version

from terratorch_hsi_peft import (
    backbones,  # noqa: F401  (registers the backbones)
    models,  # noqa: F401  (registers PEFTEncoderDecoderFactory)
    pretraining,  # noqa: F401  (registers the masked autoencoders)
)
from terratorch_hsi_peft.registry import PLUGIN_NAMES

try:
    __version__ = version("terratorch-hsi-peft")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

__all__ = ["PLUGIN_NAMES", "__version__"]
