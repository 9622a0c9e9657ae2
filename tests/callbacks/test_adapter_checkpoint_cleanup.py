"""AdapterCheckpoint leaves no adapter file whose checkpoint ModelCheckpoint deleted.

Runs go through the real CLI (``build_lightning_cli`` in this process) with a tiny SpectralGPT,
KronA adapters and ``save_top_k: 2``: the files of checkpoints that fell out of the top two go,
also those written before a resume, and so do the temporary files of a killed write. The same
holds in the subfolders a metric name in the checkpoint's file name makes (``train/loss``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from terratorch.cli_tools import build_lightning_cli
from tiny_configs import dummy_segmentation, quiet_trainer

from terratorch_hsi_peft.callbacks import AdapterCheckpoint

SUFFIX = AdapterCheckpoint.SUFFIX
KRONA = {"method": "KRONA", "peft_config_kwargs": {"target_modules": ["attn.q", "attn.v"]}}


def _config(folder: Path, max_steps: int) -> Path:
    config = dummy_segmentation(KRONA, decoder_channels=8)
    config["seed_everything"] = 0
    checkpoints = {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        # Each step is a new best (the latest); the third one deletes the first.
        "init_args": {
            "dirpath": str(folder / "ckpt"),
            "monitor": "step",
            "mode": "max",
            "save_top_k": 2,
            "every_n_train_steps": 1,
        },
    }
    config["trainer"] = quiet_trainer(
        max_steps=max_steps,
        limit_val_batches=0,
        default_root_dir=str(folder),
        callbacks=[checkpoints, {"class_path": "terratorch_hsi_peft.callbacks.AdapterCheckpoint"}],
    )
    config["data"]["init_args"].update(
        batch_size=1, num_workers=0, train_samples=8, val_samples=1, test_samples=1, num_classes=3
    )
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


@pytest.mark.parametrize("monitor", ["step", None])
def test_adapter_files_follow_checkpoints_into_metric_name_subfolders(tmp_path, monitor):
    # A TerraTorch metric in the file name: the "/" of train/loss makes one folder per epoch,
    # epoch=N-train/loss=X.ckpt. save_top_k=1 keeps the latest checkpoint (each epoch is a new
    # best under monitor "step"; without a monitor the previous one is replaced).
    checkpoints = tmp_path / "ckpt"
    config = yaml.safe_load(_config(tmp_path, -1).read_text())
    config["trainer"].update(max_epochs=4)
    config["data"]["init_args"]["train_samples"] = 2
    config["trainer"]["callbacks"][0]["init_args"] = {
        "dirpath": str(checkpoints),
        "monitor": monitor,
        "mode": "max",
        "save_top_k": 1,
        "filename": "{epoch}-{train/loss:.3f}",
    }
    path = tmp_path / "fit_epochs.yaml"
    path.write_text(yaml.safe_dump(config))
    # a killed write of an earlier run, in a folder of a checkpoint that is gone
    stale = checkpoints / "epoch=0-train" / f".loss=9.999{SUFFIX}.k1ll3d00.part"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half")
    build_lightning_cli(["fit", "-c", str(path)])
    [kept] = list(checkpoints.rglob("*.ckpt"))
    assert kept.parent.name == "epoch=3-train"  # one checkpoint, the last epoch's
    left = {p.relative_to(checkpoints).as_posix() for p in checkpoints.rglob("*")}
    assert left == {
        "adapters.safetensors",
        "epoch=3-train",
        f"epoch=3-train/{kept.name}",
        f"epoch=3-train/{kept.stem}{SUFFIX}",  # written beside it; those of epochs 0-2 went
    }
