"""What the end-to-end tests share: small offline copies of shipped configs."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
#: A small SpectralGPT: width 48 (6 x 8 Kronecker factors), 2 blocks.
SMALL = {
    "backbone_pretrained": False,
    "backbone_embed_dim": 48,
    "backbone_depth": 2,
    "backbone_num_heads": 2,
}


def small_copy(experiment: str, folder: Path) -> list[str]:
    """The manifest command of ``experiment`` with its model file copied small and offline."""
    manifest = yaml.safe_load((REPO_ROOT / "configs" / "manifest.yaml").read_text())
    args = shlex.split(manifest["experiments"][experiment]["command"])[1:]
    config_path = REPO_ROOT / args[-1]
    config = yaml.safe_load(config_path.read_text())
    model_args = config["model"]["init_args"]["model_args"]
    model_args.update(SMALL)
    for neck in model_args.get("necks", []):
        if neck["name"] == "SelectIndices":  # the shipped indices are layers of 12 blocks
            depth = SMALL["backbone_depth"]
            neck["indices"] = [index * depth // 12 for index in neck["indices"]]
    for key in ("a_shape", "b_shape"):  # the shipped 24x24 kron 32x32 fits width 768 only
        model_args["peft_config"]["peft_config_kwargs"].pop(key)
    copy = folder / config_path.name
    copy.write_text(yaml.safe_dump(config, sort_keys=False))
    return [str(REPO_ROOT / a) if a.startswith("configs/") else a for a in args[:-1]] + [str(copy)]
