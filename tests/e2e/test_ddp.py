"""Multi-device training: ``strategy: ddp`` on two CPU processes (gloo) with a shipped config.

Lightning starts the second process itself by re-running the ``terratorch`` command; the
datamodule draws the same split in both, the sampler shares the batches out. What must come out
once: the checkpoint, the adapter file (rank zero writes it) and the logged metrics.
"""

from __future__ import annotations

import csv

import pytest
import torch
from e2e_helpers import small_copy, terratorch
from safetensors.torch import load_file

STEPS = 2


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_writes_one_checkpoint_and_one_adapter_file(tmp_path, shared_data):
    experiment = "indian_pines/classification/krona_plus"
    args = small_copy(experiment, tmp_path)
    output = terratorch(
        [
            *args,
            "--data.init_args.root",
            shared_data / "indian_pines",
            "--trainer.accelerator",
            "cpu",
            "--trainer.devices",
            2,
            "--trainer.strategy",
            "ddp",
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
    assert checkpoints == ["checkpoints/last.ckpt"], files
    assert adapters == ["checkpoints/adapters.safetensors"], files

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
