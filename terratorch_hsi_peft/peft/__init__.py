"""Parameter-efficient fine-tuning of any PyTorch model's Linear layers.

Methods: LoRA, LoRA+, KronA, KronA+ and LoKr (:class:`PeftMethod`). The configuration is
TerraTorch's ``peft_config`` dict; this package does not import TerraTorch.

Example::

    from terratorch_hsi_peft.peft import apply_peft, save_adapters, trainable_parameter_report

    apply_peft(backbone, {"method": "KRONA_PLUS",
                          "peft_config_kwargs": {"target_modules": ["attn.q", "attn.v"],
                                                 "a_shape": [24, 24], "lr_ratio": 16}})
    print(trainable_parameter_report(backbone))
    save_adapters(backbone, "krona_plus.safetensors")
"""

from terratorch_hsi_peft.peft.base import AdapterLinear
from terratorch_hsi_peft.peft.config import AdapterConfig, PeftMethod
from terratorch_hsi_peft.peft.inject import (
    adapter_layers,
    apply_peft,
    find_targets,
    merge_adapters,
    unmerge_adapters,
)
from terratorch_hsi_peft.peft.io import adapter_file_bytes, load_adapters, save_adapters
from terratorch_hsi_peft.peft.krona import KronALinear
from terratorch_hsi_peft.peft.lokr import LoKrLinear
from terratorch_hsi_peft.peft.lora import LoRALinear
from terratorch_hsi_peft.peft.qkv import QKVSplit, split_qkv
from terratorch_hsi_peft.peft.report import TrainableParameterReport, trainable_parameter_report

__all__ = [
    "AdapterConfig",
    "AdapterLinear",
    "KronALinear",
    "LoKrLinear",
    "LoRALinear",
    "PeftMethod",
    "QKVSplit",
    "TrainableParameterReport",
    "adapter_file_bytes",
    "adapter_layers",
    "apply_peft",
    "find_targets",
    "load_adapters",
    "merge_adapters",
    "save_adapters",
    "split_qkv",
    "trainable_parameter_report",
    "unmerge_adapters",
]
