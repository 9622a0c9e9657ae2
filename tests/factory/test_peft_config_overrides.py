"""A dotted override below ``peft_config`` on the command line is explained, not half-applied.

jsonargparse turns ``--model.init_args.model_args.peft_config.peft_config_kwargs.r 4`` into a
``peft_config`` holding the single key ``'peft_config_kwargs.r'`` (``model_args`` is an untyped
dict); the factory says so and how to give ``peft_config`` complete.
"""

from __future__ import annotations

import pytest
import yaml
from terratorch.cli_tools import build_lightning_cli

CONFIG = {
    "trainer": {
        "accelerator": "cpu",
        "max_steps": 1,
        "logger": False,
        "callbacks": [{"class_path": "terratorch_hsi_peft.callbacks.LoadPlugin"}],
    },
    "data": {
        "class_path": "terratorch.datamodules.dummy_datamodule.DummyDataModule",
        "init_args": {"channels": 6, "height": 16, "width": 16, "segmentation": True},
    },
    "model": {
        "class_path": "terratorch.tasks.SemanticSegmentationTask",
        "init_args": {
            "model_factory": "PEFTEncoderDecoderFactory",
            "loss": "ce",
            "ignore_index": -1,
            "model_args": {
                "backbone": "spectralgpt_vit_base",
                "backbone_num_bands": 6,
                "backbone_img_size": 16,
                "backbone_depth": 1,
                "backbone_embed_dim": 16,
                "backbone_num_heads": 2,
                "backbone_out_indices": [0],
                "necks": [{"name": "ReshapeTokensToImage"}],
                "decoder": "FCNDecoder",
                "num_classes": 3,
                "peft_config": {
                    "method": "LORA",
                    "peft_config_kwargs": {"target_modules": ["attn.q", "attn.v"], "r": 2},
                },
            },
        },
    },
}


def test_a_dotted_override_below_peft_config_names_the_fix(tmp_path):
    path = tmp_path / "lora.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    override = ["--model.init_args.model_args.peft_config.peft_config_kwargs.r", "4"]
    with pytest.raises(ValueError, match=r"replaces the whole peft_config with that one key"):
        build_lightning_cli(["fit", "-c", str(path), *override])
