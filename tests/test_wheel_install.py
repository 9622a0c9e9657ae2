"""The built wheel, installed in a fresh virtual environment: every TerraTorch entry point finds it.

The wheel is built from a copy of the files the build needs (not the checkout) and installed with
pip into a new venv under the test's temporary folder. To stay within minutes it is installed
``--no-deps``: a ``.pth`` in the new venv appends the test environment's site-packages for the
dependencies (torch, TerraTorch). Such a path entry is not a site directory, so nothing of the
test environment's own ``.pth`` files (e.g. an editable install of this plugin) runs there: only
the wheel's. ``make wheel-check`` (CI) installs the same wheel with its real dependencies.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from terratorch_examples import burn_scars, make_burn_scars, swap_in_spectralgpt, switch_to_plugin
from terratorch_examples import write as write_yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
#: What the build reads: metadata, build step, the start-up hook and the package.
BUILD_INPUTS = [
    "pyproject.toml",
    "setup.py",
    "MANIFEST.in",
    "README.md",
    "terratorch_hsi_peft_autoload.pth",
    "terratorch_hsi_peft_autoload.py",
    "terratorch_hsi_peft",
]

pytestmark = pytest.mark.slow


def _run(args: list, cwd: Path, env: dict | None = None, timeout: float = 600) -> str:
    # Without PYTHONPATH: the source tree must not shadow what the wheel installed.
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**clean, "PYTHONWARNINGS": "ignore", **(env or {})},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    return output


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in BUILD_INPUTS:
        path = REPO_ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    dist = tmp_path_factory.mktemp("dist")
    pip = [sys.executable, "-m", "pip"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", dist, "."], source)
    (built,) = dist.glob("terratorch_hsi_peft-*.whl")
    return built


@pytest.fixture(scope="module")
def venv_python(wheel: Path, tmp_path_factory) -> Path:
    """A fresh venv (not this one, no system site-packages) with the wheel installed."""
    venv = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", "--without-pip", venv], venv)
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", python]
    _run([*pip, "install", "--no-deps", "--no-index", wheel], venv)
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(_run([python, "-c", purelib], venv).strip())
    (site / "zz_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def test_wheel_holds_the_package_the_hook_and_nothing_of_the_repository(wheel: Path):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {
        "terratorch_hsi_peft",
        "terratorch_hsi_peft-0.1.0.dist-info",
        "terratorch_hsi_peft_autoload.py",
        "terratorch_hsi_peft_autoload.pth",
    }
    assert "terratorch_hsi_peft/backbones/spectralgpt.py" in names
    assert "terratorch_hsi_peft-0.1.0.dist-info/METADATA" in names


def test_start_up_imports_neither_terratorch_nor_the_plugin(venv_python: Path, tmp_path: Path):
    out = _run(
        [
            venv_python,
            "-c",
            "import sys; print([type(f).__name__ for f in sys.meta_path][0]); "
            "print(sorted(m for m in sys.modules if m.startswith(('terratorch', 'torch'))))",
        ],
        tmp_path,
    )
    finder, modules = out.splitlines()
    assert finder == "AutoloadFinder"
    assert modules == "['terratorch_hsi_peft_autoload']"


def test_import_terratorch_registers_the_plugin_unless_switched_off(venv_python, tmp_path):
    code = (
        "import sys, terratorch\n"
        "from terratorch.registry import BACKBONE_REGISTRY, MODEL_FACTORY_REGISTRY\n"
        "print('terratorch_hsi_peft' in sys.modules, sys.modules.get('terratorch_hsi_peft') and "
        "sys.modules['terratorch_hsi_peft'].__file__)\n"
        "print('spectralgpt_vit_base' in BACKBONE_REGISTRY, "
        "'PEFTEncoderDecoderFactory' in MODEL_FACTORY_REGISTRY)\n"
    )
    loaded, registered = _run([venv_python, "-c", code], tmp_path).splitlines()[-2:]
    assert loaded.startswith("True ") and str(venv_python.parents[1]) in loaded  # the wheel's
    assert registered == "True True"
    off = _run(
        [venv_python, "-c", code], tmp_path, env={"TERRATORCH_HSI_PEFT_AUTOLOAD": "0"}
    ).splitlines()[-2:]
    assert off == ["False None", "False False"]


def test_fit_predict_from_config_deploy_and_load_from_checkpoint(venv_python, tmp_path):
    """TerraTorch's burn_scars example on SpectralGPT with KronA+: the config names no class of
    the plugin (only ``spectralgpt_vit_base`` and ``PEFTEncoderDecoderFactory``)."""
    data = make_burn_scars(tmp_path / "data")
    runs = tmp_path / "runs"
    config = swap_in_spectralgpt(switch_to_plugin(burn_scars(data, runs), fused_qkv=False))
    text = yaml.safe_dump(config)
    assert "terratorch_hsi_peft" not in text
    cli = [venv_python, "-m", "terratorch"]
    _run([*cli, "fit", "--config", write_yaml(config, tmp_path / "fit.yaml")], tmp_path)

    deploy = runs / "config_deploy.yaml"
    assert "callbacks" not in yaml.safe_load(deploy.read_text())["trainer"]
    (checkpoint,) = (runs / "checkpoints").glob("epoch=*[0-9].ckpt")
    predictions = tmp_path / "predictions"
    predict = [
        *cli,
        "predict",
        "--config",
        deploy,
        "--ckpt_path",
        checkpoint,
        "--data.init_args.predict_data_root",
        data / "validation",
        "--predict_output_dir",
        predictions,
    ]
    _run(predict, tmp_path)
    scenes = list((data / "validation").glob("*_merged.tif"))
    assert len(list(predictions.glob("*_pred.tif"))) == len(scenes)

    code = (
        "import sys\n"
        "from terratorch.tasks import SemanticSegmentationTask\n"
        f"task = SemanticSegmentationTask.load_from_checkpoint({str(checkpoint)!r})\n"
        "model = task.model\n"
        "adapted = hasattr(model, 'peft_trainable_encoder_params')\n"
        "print('loaded', type(model.encoder).__name__, adapted)\n"
    )
    output = _run([venv_python, "-c", code], tmp_path).splitlines()
    assert "loaded SpectralGPTEncoder True" in output
    assert torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"] == 2
