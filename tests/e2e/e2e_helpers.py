"""What the end-to-end tests share: small offline copies of shipped configs, the real CLI."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
TERRATORCH = str(Path(sys.executable).parent / "terratorch")
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
    for key in ("a_shape", "b_shape"):  # the shipped 24x24 kron 32x32 fits width 768 only
        model_args["peft_config"]["peft_config_kwargs"].pop(key)
    copy = folder / config_path.name
    copy.write_text(yaml.safe_dump(config, sort_keys=False))
    return [str(REPO_ROOT / a) if a.startswith("configs/") else a for a in args[:-1]] + [str(copy)]


def terratorch(args: list[Any], cwd: Path) -> str:
    """Run the ``terratorch`` command; return its output, failing the test with it on error."""
    result = subprocess.run(
        [TERRATORCH, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    return output
