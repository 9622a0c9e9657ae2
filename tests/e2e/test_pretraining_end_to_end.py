"""The two-step pre-training recipe of configs/manifest.yaml through the real terratorch command.

Step 1 (``pretraining/indian_pines_mae``) trains SpectralGPT's masked autoencoder with stock
``ReconstructionTask`` on real Indian Pines; step 2 (``pretraining/indian_pines_krona_plus``)
starts KronA+ from the encoder file step 1 wrote, with the shipped relative path, in the same
folder. Both small (a 2-block encoder of width 48) and a few steps long.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch
import yaml
from e2e_helpers import REPO_ROOT, SMALL, small_copy
from terratorch_cli import terratorch

from terratorch_hsi_peft.backbones import spectralgpt_vit_base
from terratorch_hsi_peft.pretraining import export_encoder_from_checkpoint

STEP_ONE = "pretraining/indian_pines_mae"
STEP_TWO = "pretraining/indian_pines_krona_plus"
SMALL_MAE = {
    "pretrained": False,
    "embed_dim": SMALL["backbone_embed_dim"],
    "depth": SMALL["backbone_depth"],
    "num_heads": SMALL["backbone_num_heads"],
    "decoder_embed_dim": 32,
    "decoder_depth": 1,
    "decoder_num_heads": 2,
}
FEW_STEPS = ["--trainer.max_steps", 3, "--trainer.limit_val_batches", 2]
QUIET = ["--trainer.enable_progress_bar", "false"]


def small_mae_copy(folder: Path) -> list[str]:
    """The manifest command of step 1 with its model file copied small and offline."""
    manifest = yaml.safe_load((REPO_ROOT / "configs" / "manifest.yaml").read_text())
    args = shlex.split(manifest["experiments"][STEP_ONE]["command"])[1:]
    config_path = REPO_ROOT / args[-1]
    config = yaml.safe_load(config_path.read_text())
    config["model"]["init_args"]["model_args"].update(SMALL_MAE)
    copy = folder / config_path.name
    copy.write_text(yaml.safe_dump(config, sort_keys=False))
    return [str(REPO_ROOT / a) if a.startswith("configs/") else a for a in args[:-1]] + [str(copy)]


@pytest.mark.slow
def test_pretrain_export_and_peft_from_the_exported_encoder(tmp_path, shared_data):
    root = shared_data / "indian_pines"
    step_one = small_mae_copy(tmp_path)
    output = terratorch([*step_one, "--data.init_args.root", root, *FEW_STEPS, *QUIET], tmp_path)
    checkpoints = tmp_path / "outputs" / STEP_ONE / "checkpoints"
    encoder_file = checkpoints / "encoder.pth"
    assert re.search(r"EncoderExport: wrote \S*/checkpoints/encoder\.pth", output)  # visible
    exported = torch.load(encoder_file, weights_only=True)
    pretrained = torch.load(checkpoints / "last.ckpt", weights_only=True)
    # the export is the trained encoder of the Lightning checkpoint, under the official names
    trained = {
        k.removeprefix("model.encoder."): v
        for k, v in pretrained["state_dict"].items()
        if k.startswith("model.encoder.")
    }
    assert trained.keys() == exported["model"].keys()
    assert all(torch.equal(trained[k], v) for k, v in exported["model"].items())
    # the route statistics travel with both files
    routes = pretrained["HyperspectralPretrainDataModule"]["band_routes"]
    assert exported["scenes"] == ["indian_pines"]
    assert torch.equal(exported["band_routes"][0]["matrix"], routes[0]["matrix"])
    # the same file can be made from the Lightning checkpoint of any saved epoch
    again = torch.load(export_encoder_from_checkpoint(checkpoints / "last.ckpt"), weights_only=True)
    assert again["args"] == exported["args"] and again["scenes"] == exported["scenes"]
    assert all(torch.equal(again["model"][k], v) for k, v in exported["model"].items())

    # it loads into spectralgpt_vit_* with nothing missing, dropped or resized
    backbone = spectralgpt_vit_base(
        embed_dim=48, depth=2, num_heads=2, img_size=32, ckpt_path=str(encoder_file)
    )
    report = backbone.load_report
    assert not report.missing and not report.dropped and not report.resized
    assert sorted(report.loaded) == sorted(exported["model"])

    # step 2: KronA+ from the exported encoder, the shipped relative backbone_ckpt_path
    step_two = small_copy(STEP_TWO, tmp_path)
    model_args = yaml.safe_load(Path(step_two[-1]).read_text())["model"]["init_args"]
    assert model_args["model_args"]["backbone_ckpt_path"] == str(
        Path("outputs") / STEP_ONE / "checkpoints" / "encoder.pth"
    )
    terratorch([*step_two, "--data.init_args.root", root, *FEW_STEPS, *QUIET], tmp_path)
    finetuned = torch.load(
        tmp_path / "outputs" / STEP_TWO / "checkpoints" / "last.ckpt", weights_only=True
    )
    weights = finetuned["state_dict"]
    # frozen encoder weights are the pre-trained ones; the adapters trained on top of them
    for key in ("patch_embed.proj.weight", "pos_embed_spatial", "blocks.1.mlp.fc2.weight"):
        assert torch.equal(weights[f"model.encoder.{key}"], exported["model"][key]), key
    assert (tmp_path / "outputs" / STEP_TWO / "checkpoints" / "adapters.safetensors").is_file()
    # and the fine-tuning datamodule fitted the same band route as pre-training
    finetune_route = finetuned["HyperspectralPatchDataModule"]["band_route"]
    assert torch.equal(finetune_route["matrix"], routes[0]["matrix"])
    assert torch.equal(finetune_route["mean"], routes[0]["mean"])
