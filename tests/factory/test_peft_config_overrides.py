"""A dotted override below ``peft_config`` on the command line is explained, not half-applied.

jsonargparse turns ``--model.init_args.model_args.peft_config.peft_config_kwargs.r 4`` into a
``peft_config`` holding the single key ``'peft_config_kwargs.r'`` (``model_args`` is an untyped
dict); the factory says so and how to give ``peft_config`` complete.
"""

from __future__ import annotations

import pytest
import yaml
from terratorch.cli_tools import build_lightning_cli
from tiny_configs import dummy_segmentation, quiet_trainer

LORA = {"method": "LORA", "peft_config_kwargs": {"target_modules": ["attn.q", "attn.v"], "r": 2}}
CONFIG = {
    "trainer": quiet_trainer(
        callbacks=[{"class_path": "terratorch_hsi_peft.callbacks.LoadPlugin"}]
    ),
    **dummy_segmentation(LORA),
}


def test_a_dotted_override_below_peft_config_names_the_fix(tmp_path):
    path = tmp_path / "lora.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    override = ["--model.init_args.model_args.peft_config.peft_config_kwargs.r", "4"]
    with pytest.raises(ValueError, match=r"replaces the whole peft_config with that one key"):
        build_lightning_cli(["fit", "-c", str(path), *override])
