"""AdapterCheckpoint leaves no adapter file whose checkpoint ModelCheckpoint deleted.

Runs go through the real CLI (``build_lightning_cli`` in this process) with a tiny SpectralGPT,
KronA adapters and ``save_top_k: 2``: the files of checkpoints that fell out of the top two go,
also those written before a resume, and so do the temporary files of a killed write.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from terratorch.cli_tools import build_lightning_cli

from terratorch_hsi_peft.callbacks import AdapterCheckpoint

SUFFIX = AdapterCheckpoint.SUFFIX


def _config(folder: Path, max_steps: int) -> Path:
    config = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "max_steps": max_steps,
            "logger": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "limit_val_batches": 0,
            "default_root_dir": str(folder),
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    # Each step is a new best (the latest); the third one deletes the first.
                    "init_args": {
                        "dirpath": str(folder / "ckpt"),
                        "monitor": "step",
                        "mode": "max",
                        "save_top_k": 2,
                        "every_n_train_steps": 1,
                    },
                },
                {"class_path": "terratorch_hsi_peft.callbacks.AdapterCheckpoint"},
            ],
        },
        "data": {
            "class_path": "terratorch.datamodules.dummy_datamodule.DummyDataModule",
            "init_args": {
                "batch_size": 1,
                "num_workers": 0,
                "train_samples": 8,
                "val_samples": 1,
                "test_samples": 1,
                "channels": 6,
                "height": 16,
                "width": 16,
                "segmentation": True,
                "num_classes": 3,
            },
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
                    "decoder_channels": 8,
                    "num_classes": 3,
                    "peft_config": {
                        "method": "KRONA",
                        "peft_config_kwargs": {"target_modules": ["attn.q", "attn.v"]},
                    },
                },
            },
        },
    }
    path = folder / f"fit_{max_steps}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _adapter_files(folder: Path) -> list[str]:
    return sorted(p.name.removesuffix(SUFFIX) for p in folder.glob("*" + SUFFIX))


def test_adapter_files_follow_the_checkpoints_that_save_top_k_keeps_also_after_resume(tmp_path):
    checkpoints = tmp_path / "ckpt"
    cli = build_lightning_cli(["fit", "-c", str(_config(tmp_path, 3))])
    kept = sorted(p.stem for p in checkpoints.glob("*.ckpt"))
    assert kept == ["epoch=0-step=2", "epoch=0-step=3"]
    assert _adapter_files(checkpoints) == kept  # step 1's went with its checkpoint

    # A write of the run before the resume was killed: its temporary file is left behind.
    stale = checkpoints / f".epoch=0-step=3{SUFFIX}.k1ll3d00.part"
    stale.write_bytes(b"half")
    resume = ["--ckpt_path", cli.trainer.checkpoint_callback.best_model_path]
    build_lightning_cli(["fit", "-c", str(_config(tmp_path, 5)), *resume])
    kept = sorted(p.stem for p in checkpoints.glob("*.ckpt"))
    assert "epoch=0-step=2" not in kept and "epoch=0-step=5" in kept  # deleted after the resume
    assert _adapter_files(checkpoints) == kept  # step 2's, written before the resume, went too
    assert not stale.exists()
    assert sorted(p.name for p in checkpoints.iterdir()) == sorted(
        [*(f"{k}.ckpt" for k in kept), *(f"{k}{SUFFIX}" for k in kept), "adapters.safetensors"]
    )
