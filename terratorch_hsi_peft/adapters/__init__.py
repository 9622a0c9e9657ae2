"""Parameter-efficient fine-tuning of any PyTorch model's Linear layers.

Each method is one module of :mod:`terratorch_hsi_peft.adapters.methods` that registers itself
(:mod:`terratorch_hsi_peft.adapters.registry`; :func:`method_names` lists them). The configuration
is TerraTorch's ``peft_config`` dict, parsed by :class:`PeftSpec` for this module-level API and for
the model factory alike. These functions serve any module; their counterparts with ``model`` in the
name (:mod:`terratorch_hsi_peft.models`) serve a whole TerraTorch model. The adapter code itself
needs only torch and safetensors (Hugging Face peft, when installed, only tells which method names
it shares) and works on any model; importing it still imports the plugin's top-level package first,
which registers the plugin with TerraTorch (so TerraTorch and Lightning are loaded too).

Example::

    from terratorch_hsi_peft.adapters import apply_peft, save_adapters, trainable_parameter_report

    apply_peft(backbone, {"method": "KRONA_PLUS",
                          "peft_config_kwargs": {"target_modules": ["attn.q", "attn.v"],
                                                 "a_shape": [24, 24], "lr_ratio": 16}})
    print(trainable_parameter_report(backbone))
    save_adapters(backbone, "krona_plus.safetensors")
"""

from terratorch_hsi_peft.adapters.base import AdapterLinear
from terratorch_hsi_peft.adapters.config import PEFT_CONFIG_KEYS, AdapterConfig, PeftSpec
from terratorch_hsi_peft.adapters.inject import (
    adapter_layers,
    apply_peft,
    find_targets,
    merge_adapters,
    unmerge_adapters,
)
from terratorch_hsi_peft.adapters.io import adapter_file_bytes, load_adapters, save_adapters
from terratorch_hsi_peft.adapters.methods.krona import KronALinear
from terratorch_hsi_peft.adapters.methods.lokr import LoKrLinear
from terratorch_hsi_peft.adapters.methods.lora import LoRALinear
from terratorch_hsi_peft.adapters.qkv import QKVSplit, split_qkv
from terratorch_hsi_peft.adapters.registry import (
    AdapterMethod,
    MethodOptions,
    get_method,
    method_names,
    register_method,
    registered_methods,
)
from terratorch_hsi_peft.adapters.report import TrainableParameterReport, trainable_parameter_report

__all__ = [
    "PEFT_CONFIG_KEYS",
    "AdapterConfig",
    "AdapterLinear",
    "AdapterMethod",
    "KronALinear",
    "LoKrLinear",
    "LoRALinear",
    "MethodOptions",
    "PeftSpec",
    "QKVSplit",
    "TrainableParameterReport",
    "adapter_file_bytes",
    "adapter_layers",
    "apply_peft",
    "find_targets",
    "get_method",
    "load_adapters",
    "merge_adapters",
    "method_names",
    "register_method",
    "registered_methods",
    "save_adapters",
    "split_qkv",
    "trainable_parameter_report",
    "unmerge_adapters",
]
