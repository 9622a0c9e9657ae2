"""What the end-to-end tests share: small offline copies of shipped configs."""

from __future__ import annotations

import itertools
from pathlib import Path

import yaml
from config_helpers import REPO_ROOT, command_args

#: A small SpectralGPT: width 48 (6 x 8 Kronecker factors), 2 blocks.
SMALL = {
    "backbone_pretrained": False,
    "backbone_embed_dim": 48,
    "backbone_depth": 2,
    "backbone_num_heads": 2,
}
PEFT_FLAG = "--model.init_args.model_args.peft_config"


def small_copy(experiment: str, folder: Path) -> list[str]:
    """The manifest command of ``experiment``, as the shell passes it, with its model file copied
    small and offline (the method files' automatic Kronecker shapes fit the small width)."""
    out = []
    for flag, value in itertools.pairwise(["", *command_args(experiment)]):
        if flag == "--config":
            config_path = REPO_ROOT / value
            config = yaml.safe_load(config_path.read_text())
            model_args = config.get("model", {}).get("init_args", {}).get("model_args")
            value = str(config_path)
            if model_args is not None:
                model_args.update(SMALL)
                for neck in model_args.get("necks", []):
                    if neck["name"] == "SelectIndices":  # the shipped indices are of 12 blocks
                        depth = SMALL["backbone_depth"]
                        neck["indices"] = [index * depth // 12 for index in neck["indices"]]
                copy = folder / config_path.name
                copy.write_text(yaml.safe_dump(config, sort_keys=False))
                value = str(copy)
        out.append(value)
    return out
