"""No NaN encoder is trained, written or loaded: the chain of issue 31.

``mask_ratio: 0`` made the masked-autoencoder loss NaN from the first step; ``EncoderExport``
then wrote an all-NaN ``encoder.pth``, the backbone loaded it through ``backbone_ckpt_path``, and
the fine-tune wrote NaN adapters. Each link is refused now, through the route a user takes (the
``terratorch`` CLI, run in this process by ``build_lightning_cli``), with the file, the tensors
and the fix named, and nothing half-written on disk.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import yaml
from terratorch.cli_tools import build_lightning_cli

from terratorch_hsi_peft.backbones import CheckpointError, spectralgpt_vit_base
from terratorch_hsi_peft.backbones.checkpoint import load_checkpoint
from terratorch_hsi_peft.pretraining import (
    SpectralGPTMAE,
    export_encoder,
    export_encoder_from_checkpoint,
    spectralgpt_mae_vit_base,
)

#: A tiny masked autoencoder: 6 bands (2 spectral groups), 16x16 (2x2 patches), width 16.
TINY_MAE = {
    "model": "spectralgpt_mae_vit_base",
    "num_bands": 6,
    "img_size": 16,
    "embed_dim": 16,
    "depth": 1,
    "num_heads": 2,
    "decoder_embed_dim": 16,
    "decoder_depth": 1,
    "decoder_num_heads": 2,
    "mask_ratio": 0.75,  # keeps 2 of the 8 tokens (0.9 would keep none)
}
ENCODER = {k: v for k, v in TINY_MAE.items() if k in ("num_bands", "img_size", "embed_dim")}
ENCODER.update(depth=1, num_heads=2)


def _pretrain_config(folder: Path, image_std: float = 1.0, **model_args) -> Path:
    """``terratorch fit`` of the tiny MAE with ``EncoderExport``, on random 6-band cubes."""
    config = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "max_steps": 2,
            "logger": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "limit_val_batches": 0,
            "default_root_dir": str(folder),
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {
                        "dirpath": str(folder / "ckpt"),
                        "save_top_k": 0,
                        "save_last": True,
                    },
                },
                {"class_path": "terratorch_hsi_peft.callbacks.EncoderExport"},
            ],
        },
        "data": {
            "class_path": "terratorch.datamodules.dummy_datamodule.DummyDataModule",
            "init_args": {
                "batch_size": 2,
                "num_workers": 0,
                "train_samples": 4,
                "val_samples": 1,
                "test_samples": 1,
                "channels": 6,
                "height": 16,
                "width": 16,
                "image_std": image_std,
            },
        },
        "model": {
            "class_path": "terratorch.tasks.ReconstructionTask",
            "init_args": {
                "model_factory": "FullModelFactory",
                "plot_on_val": False,
                "masked_metric": False,  # as the shipped config: metrics over every pixel
                "model_args": {**TINY_MAE, **model_args},
            },
        },
        "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1.0e-3}},
    }
    path = folder / "pretrain.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_mask_ratio_zero_is_refused_before_training(tmp_path):
    # It was documented as valid and gave a NaN loss from the first step.
    with pytest.raises(ValueError, match=r"mask_ratio=0 masks no token.*0/0 = NaN.*\(0, 1\)"):
        build_lightning_cli(["fit", "-c", str(_pretrain_config(tmp_path, mask_ratio=0))])
    assert not (tmp_path / "ckpt").exists()  # nothing trained, nothing written


@pytest.mark.parametrize("ratio", [0, 0.0, 1e-17])
def test_no_ratio_that_masks_no_token_reaches_the_loss(ratio):
    # 1e-17 passes the range but 1 - 1e-17 rounds to 1: all 8 tokens would be kept.
    kwargs = {k: v for k, v in TINY_MAE.items() if k != "model"}
    x = torch.randn(2, 6, 16, 16)
    with pytest.raises(ValueError, match=r"masks no token"):
        model = SpectralGPTMAE(**{**kwargs, "mask_ratio": ratio})
        model(x)
    model = SpectralGPTMAE(**kwargs)
    with pytest.raises(ValueError, match=r"masks no token"):
        model(x, mask_ratio=ratio)
    # the smallest ratio that masks one token of the 8 gives a finite loss
    assert torch.isfinite(model(x, mask_ratio=1 / 8).loss["loss"])


def test_a_diverged_pretraining_writes_no_encoder_and_keeps_the_old_one(tmp_path):
    # Inputs of 1e30 square to Inf in the loss: the first step fills the weights with NaN.
    encoder_file = tmp_path / "ckpt" / "encoder.pth"
    encoder_file.parent.mkdir()
    encoder_file.write_bytes(b"the encoder of an earlier run")
    config = _pretrain_config(tmp_path, image_std=1.0e30)
    with pytest.raises(ValueError, match=r"The encoder to export holds NaN or Inf in ") as err:
        build_lightning_cli(["fit", "-c", str(config)])
    message = str(err.value)
    assert "patch_embed.proj.weight" in message and "in all)" in message  # named, counted
    assert f"{encoder_file} was not written" in message
    assert "export_encoder_from_checkpoint" in message and "lower learning rate" in message
    assert encoder_file.read_bytes() == b"the encoder of an earlier run"
    assert sorted(p.name for p in encoder_file.parent.iterdir()) == ["encoder.pth", "last.ckpt"]

    # The run's Lightning checkpoint is NaN too: exporting it is refused the same way.
    last = tmp_path / "ckpt" / "last.ckpt"
    expected = rf"The encoder in {re.escape(str(last))} holds NaN or Inf in .*was not written"
    with pytest.raises(ValueError, match=expected):
        export_encoder_from_checkpoint(last)
    assert not (tmp_path / "ckpt" / "last.encoder.pth").exists()


def _nan_encoder_file(folder: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """An encoder file in the export's layout with NaN in one weight (written by hand: the
    plugin's exports refuse it) and in the official pre-training layout with the decoder."""
    mae = spectralgpt_mae_vit_base(**{k: v for k, v in TINY_MAE.items() if k != "model"})
    good = folder / "good.pth"
    export_encoder(mae, good)
    content = torch.load(good, weights_only=True)
    content["model"]["blocks.0.attn.q.weight"][0, 0] = math.nan
    content["model"]["norm.bias"][1] = math.inf
    path = folder / "encoder.pth"
    torch.save(content, path)
    return path, content["model"]


def test_backbone_refuses_a_nan_encoder_through_the_cli(tmp_path):
    path, _ = _nan_encoder_file(tmp_path)
    config = yaml.safe_load(_pretrain_config(tmp_path).read_text())
    config["trainer"]["callbacks"] = []
    config["data"]["init_args"].update(segmentation=True, num_classes=3)
    config["model"] = {
        "class_path": "terratorch.tasks.SemanticSegmentationTask",
        "init_args": {
            "model_factory": "PEFTEncoderDecoderFactory",
            "model_args": {
                "backbone": "spectralgpt_vit_base",
                "backbone_ckpt_path": str(path),
                **{f"backbone_{k}": v for k, v in ENCODER.items()},
                "backbone_out_indices": [0],
                "necks": [{"name": "ReshapeTokensToImage"}],
                "decoder": "FCNDecoder",
                "decoder_channels": 8,
                "num_classes": 3,
                "peft_config": {
                    "method": "KRONA",
                    "peft_config_kwargs": {"target_modules": ["attn.q", "attn.v"]},
                },
            },
        },
    }
    finetune = tmp_path / "finetune.yaml"
    finetune.write_text(yaml.safe_dump(config))
    expected = (  # (?s): jsonargparse wraps the factory's error over several lines
        rf"(?s)Checkpoint {re.escape(str(path))} holds NaN or Inf in blocks\.0\.attn\.q\.weight, "
        r"norm\.bias: the training that wrote it diverged.*Nothing was loaded.*backbone_ckpt_path"
    )
    with pytest.raises(ValueError, match=expected):
        build_lightning_cli(["fit", "-c", str(finetune)])
    assert not (tmp_path / "ckpt").exists()  # no checkpoint, no adapters


def test_pretraining_refuses_a_nan_checkpoint_and_stays_unchanged(tmp_path):
    path, _ = _nan_encoder_file(tmp_path)
    with pytest.raises(CheckpointError, match=rf"Checkpoint {re.escape(str(path))} holds NaN"):
        spectralgpt_mae_vit_base(**{k: v for k, v in TINY_MAE.items() if k != "model"},
                                 ckpt_path=str(path))  # fmt: skip
    backbone = spectralgpt_vit_base(**ENCODER)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"norm\.bias"):
        load_checkpoint(backbone, path)
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())
    assert backbone.load_report is None and backbone.weights_origin.startswith("random init")
