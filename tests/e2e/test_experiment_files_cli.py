"""Generated single-file experiments (configs/experiments/) through the real ``terratorch`` command.

Each run is ``terratorch fit -c <copy of the file>`` with tiny overrides written into the copy (a
small offline SpectralGPT, two steps, one validation batch), then ``terratorch predict -c
config_deploy.yaml`` as TerraTorch wrote it (no callbacks: the datamodule adds ClassMapWriter, and
the map lands in the run's folder). A real process costs ~20 s on two cores, so one experiment
per task file runs, the methods spread over them, and predict runs once per datamodule. Every
generated file is also fitted in this process through ``build_lightning_cli``, the function the
``terratorch`` command runs (same parser, same classes, no 11 s start per file).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import yaml
from e2e_helpers import REPO_ROOT, SMALL
from terratorch.cli_tools import build_lightning_cli
from terratorch_cli import terratorch

from terratorch_hsi_peft.configs_gen import EXPERIMENTS_DIR

#: Every generated file, by name (``indian_pines/classification/krona_plus``).
GENERATED = sorted(
    str(path.relative_to(REPO_ROOT / EXPERIMENTS_DIR).with_suffix(""))
    for path in (REPO_ROOT / EXPERIMENTS_DIR).rglob("*.yaml")
)

pytestmark = pytest.mark.slow

#: One experiment per task file, the methods spread over them; True: also predict from its
#: config_deploy.yaml (once per datamodule: a map of the whole scene costs about a minute).
RUNS = {
    "indian_pines/classification/lora_plus": True,
    "indian_pines/segmentation/krona": True,
    "indian_pines/segmentation_linear/loha": False,
    "paper/spectralgpt_b/lokr": False,
    "pretraining/indian_pines_krona_plus": False,
    "quickstart": False,
    "pretraining/indian_pines_mae": False,  # ReconstructionTask: nothing to map
}
SMALL_MAE = {
    "pretrained": False,
    "embed_dim": 48,
    "depth": 2,
    "num_heads": 2,
    "decoder_embed_dim": 32,
    "decoder_depth": 1,
    "decoder_num_heads": 2,
}
TINY_TRAINER = {
    "max_steps": 2,
    "limit_train_batches": 2,
    "limit_val_batches": 1,
    "num_sanity_val_steps": 0,
    "enable_progress_bar": False,
}


def tiny_copy(name: str, folder: Path) -> Path:
    """The generated file of ``name`` with the tiny overrides, written into ``folder``."""
    config = yaml.safe_load((REPO_ROOT / EXPERIMENTS_DIR / f"{name}.yaml").read_text())
    model_args = config["model"]["init_args"]["model_args"]
    if "backbone" in model_args:
        model_args.update(SMALL)
        if model_args.get("backbone_ckpt_path"):  # step 2 of the recipe: no step-1 file here
            model_args["backbone_ckpt_path"] = None
        for neck in model_args.get("necks", []):
            if neck["name"] == "SelectIndices":  # the shipped indices are of 12 blocks
                depth = SMALL["backbone_depth"]
                neck["indices"] = [index * depth // 12 for index in neck["indices"]]
    else:  # the masked autoencoder (FullModelFactory)
        model_args.update(SMALL_MAE)
    config["trainer"].update(TINY_TRAINER)
    path = folder / "experiment.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
@pytest.mark.parametrize("name", sorted(RUNS))
def test_generated_experiment_fits_and_predicts_from_config_deploy(
    name, tmp_path, shared_data, monkeypatch
):
    monkeypatch.setenv("HSI_DATA", str(shared_data))  # the files' data root: $HSI_DATA/<scene>
    fit = terratorch(["fit", "-c", tiny_copy(name, tmp_path)], tmp_path, warnings="default")
    # A validation share by default (val_size / val_fraction in the data files).
    assert "Total length of `DataLoader` across ranks is zero" not in fit
    outputs = tmp_path / "outputs" / name
    (checkpoint,) = outputs.rglob("last.ckpt")
    if not RUNS[name]:
        return
    (deploy,) = outputs.rglob("config_deploy.yaml")
    assert "callbacks" not in yaml.safe_load(deploy.read_text())["trainer"]
    args = ["predict", "-c", deploy, "--ckpt_path", checkpoint]
    output = terratorch([*args, "--data.init_args.batch_size", 1024], tmp_path)
    run = checkpoint.parent.parent  # <run>/checkpoints/last.ckpt
    maps = run / "predictions"
    assert "trainer.callbacks has no ClassMapWriter" in output
    assert f"ClassMapWriter: wrote {maps / 'indian_pines_class_map.tif'}" in output
    assert (maps / "indian_pines_class_map.tif").is_file()
    assert (maps / "indian_pines_class_map.png").is_file()
    assert not (tmp_path / "predictions").exists()  # not in the working directory


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", GENERATED)
def test_every_generated_experiment_fits_as_the_terratorch_command_runs_it(
    name, tmp_path, shared_data, monkeypatch
):
    monkeypatch.setenv("HSI_DATA", str(shared_data))
    monkeypatch.chdir(tmp_path)  # the trainer's output folders are relative paths
    monkeypatch.setattr(sys, "argv", ["terratorch"])  # as the command sees it: args only
    build_lightning_cli(["fit", "-c", str(tiny_copy(name, tmp_path))])
    (checkpoint,) = (tmp_path / "outputs" / name).rglob("last.ckpt")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert state["global_step"] == TINY_TRAINER["max_steps"]
