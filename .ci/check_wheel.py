"""Checks of the built wheel, for ``make wheel-check``.

``check_wheel.py contents <wheel>``: the wheel holds the package, its metadata and the start-up
hook (``terratorch_hsi_peft_autoload.py`` + ``.pth``), and no other file of the repository.
``check_wheel.py installed``: run by the interpreter of a fresh venv where the wheel was installed
with its dependencies, from a folder outside the repository: start-up imports neither TerraTorch
nor the plugin; ``import terratorch`` registers the plugin (from the venv, not the checkout) and a
SpectralGPT model builds and runs; ``TERRATORCH_HSI_PEFT_AUTOLOAD=0`` switches the import off.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

PACKAGE = "terratorch_hsi_peft"
HOOK = ("terratorch_hsi_peft_autoload.py", "terratorch_hsi_peft_autoload.pth")


def check_contents(wheel: str) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    dist_info = {t for t in tops if t.endswith(".dist-info")}
    unexpected = tops - {PACKAGE, *HOOK} - dist_info
    assert not unexpected, f"files from outside the package in the wheel: {sorted(unexpected)}"
    assert set(HOOK) <= tops, f"the start-up hook is missing from the wheel: {sorted(tops)}"
    assert f"{PACKAGE}/backbones/spectralgpt.py" in names, "the package is incomplete"
    (info,) = dist_info
    metadata = zipfile.ZipFile(wheel).read(f"{info}/METADATA").decode()
    assert "Requires-Dist: terratorch" in metadata, "METADATA lacks the terratorch requirement"
    print(f"{wheel}: {len(names)} files; package, metadata and start-up hook, nothing else")


def check_installed() -> None:
    assert "terratorch" not in sys.modules and PACKAGE not in sys.modules, "imported at start-up"
    assert any(type(f).__name__ == "AutoloadFinder" for f in sys.meta_path), ".pth did not run"
    import terratorch  # noqa: F401  (the hook imports the plugin after it)
    import torch
    from terratorch.registry import BACKBONE_REGISTRY, MODEL_FACTORY_REGISTRY

    plugin = sys.modules.get(PACKAGE)
    assert plugin is not None, "import terratorch did not import the plugin"
    assert plugin.__file__.startswith(sys.prefix), f"plugin imported from {plugin.__file__}"
    assert "PEFTEncoderDecoderFactory" in MODEL_FACTORY_REGISTRY
    backbone = BACKBONE_REGISTRY.build(
        "spectralgpt_vit_base", num_bands=6, img_size=16, embed_dim=48, depth=2, num_heads=2
    )
    features = backbone(torch.randn(1, 6, 16, 16))
    assert len(features) == len(backbone.out_channels)
    env = {**os.environ, "TERRATORCH_HSI_PEFT_AUTOLOAD": "0"}
    code = f"import sys, terratorch; assert {PACKAGE!r} not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    print(f"installed {plugin.__version__} from {os.path.dirname(plugin.__file__)}: discovered")


if __name__ == "__main__":
    if sys.argv[1:2] == ["contents"] and len(sys.argv) == 3:
        check_contents(sys.argv[2])
    elif sys.argv[1:] == ["installed"]:
        check_installed()
    else:
        sys.exit("usage: check_wheel.py contents <wheel> | check_wheel.py installed")
