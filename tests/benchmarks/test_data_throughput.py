"""benchmarks/data_throughput.py: its data and model are the shipped experiments' plus overrides."""

from __future__ import annotations

import argparse

import pytest
import torch

from benchmarks.data_throughput import EXPERIMENTS, TRANSFORMS, experiment_datamodule, model_rate
from benchmarks.experiments import load_experiment


def test_datamodules_are_the_shipped_ones_with_the_runs_options(tmp_path):
    args = argparse.Namespace(
        root=str(tmp_path), batch_size=64, num_workers=0, train_transform="none"
    )
    patches = experiment_datamodule(EXPERIMENTS["patch 9x9 -> 32x32"], args, tiles=False)
    tiles = experiment_datamodule(EXPERIMENTS["scene tiles 32x32"], args, tiles=True)
    shipped = load_experiment(EXPERIMENTS["patch 9x9 -> 32x32"])["data"]["init_args"]
    assert (patches.patch_size, patches.img_size) == (shipped["patch_size"], shipped["img_size"])
    assert (patches.patch_size, patches.img_size, tiles.tile_size) == (9, 32, 32)  # the labels
    assert (patches.batch_size, tiles.batch_size) == (64, 4)
    assert patches.train_transform is TRANSFORMS["none"] is None
    assert tiles.append_spectra is True  # the segmentation file's spectral path input


@pytest.mark.slow
def test_model_rate_times_the_experiments_model_at_the_encoder_size():
    image = torch.randn(2, 12, 32, 32)
    assert model_rate(EXPERIMENTS["patch 9x9 -> 32x32"], "tiny", image, seconds=0.01) > 0
