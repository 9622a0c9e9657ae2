"""Multi-device training: ``strategy: ddp`` on two CPU processes (gloo) with a shipped config.

Lightning starts the second process itself by re-running the ``terratorch`` command; the
datamodule draws the same split in both, the sampler shares the batches out. What must come out
once: the checkpoint, the adapter file (rank zero writes it) and the logged metrics. ``predict``
under DDP gives each process a share of the pixels; the class map writer merges them into the
same map that one process writes.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
import rasterio
import torch
from e2e_helpers import small_copy
from safetensors.torch import load_file
from terratorch_cli import terratorch

STEPS = 2
CPU_DDP = ["--trainer.accelerator", "cpu", "--trainer.devices", 2, "--trainer.strategy", "ddp"]


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_writes_one_checkpoint_and_one_adapter_file(tmp_path, shared_data):
    experiment = "indian_pines/classification/krona_plus"
    args = small_copy(experiment, tmp_path)
    output = terratorch(
        [
            *args,
            "--data.init_args.root",
            shared_data / "indian_pines",
            *CPU_DDP,
            "--trainer.max_steps",
            STEPS,
            "--trainer.log_every_n_steps",
            1,
            "--trainer.enable_progress_bar",
            "false",
        ],
        tmp_path,
    )
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in output, output[-3000:]

    run = tmp_path / "outputs" / experiment
    files = sorted(p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file())
    checkpoints = [f for f in files if f.endswith(".ckpt")]
    adapters = [f for f in files if f.endswith(".safetensors")]
    assert checkpoints == ["version_0/checkpoints/last.ckpt"], files
    assert adapters == ["version_0/checkpoints/adapters.safetensors"], files

    state = torch.load(run / checkpoints[0], map_location="cpu", weights_only=True)
    assert state["global_step"] == STEPS
    saved = load_file(run / adapters[0])
    for key, tensor in saved.items():
        torch.testing.assert_close(tensor, state["state_dict"][f"model.{key}"], rtol=0, atol=0)

    metrics = [f for f in files if f.endswith("metrics.csv")]
    assert len(metrics) == 1, files  # one logger: rank zero's
    rows = list(csv.DictReader((run / metrics[0]).open()))
    steps = [row["step"] for row in rows if row.get("train/loss")]
    assert len(steps) == len(set(steps)) == STEPS  # each step logged once, not once per rank


@pytest.mark.slow
@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_ddp_predict_writes_the_same_whole_scene_map_as_one_process(task, tmp_path, shared_data):
    experiment = f"indian_pines/{task}/krona_plus"
    args = small_copy(experiment, tmp_path)
    common = [*args[1:], "--data.init_args.root", shared_data / "indian_pines"]
    quiet = ["--trainer.enable_progress_bar", "false"]
    terratorch(["fit", *common, "--trainer.max_steps", STEPS, *quiet], tmp_path)
    checkpoint = tmp_path / "outputs" / experiment / "version_0" / "checkpoints" / "last.ckpt"
    after = [*common, "--ckpt_path", checkpoint, "--data.init_args.batch_size", 512, *quiet]

    maps = {}
    for name, devices in (("one", []), ("ddp", CPU_DDP)):
        out = tmp_path / f"predict_{name}"
        terratorch(["predict", *after, *devices, "--predict_output_dir", out], tmp_path)
        files = sorted(p.name for p in out.iterdir())
        assert files == ["indian_pines_class_map.png", "indian_pines_class_map.tif"], files
        with rasterio.open(out / "indian_pines_class_map.tif") as src:
            maps[name] = src.read(1)
    assert maps["ddp"].shape == (145, 145)
    assert (maps["ddp"] > 0).all()  # every pixel predicted by one process or the other
    np.testing.assert_array_equal(maps["ddp"], maps["one"])
