"""benchmarks/path_diagnosis.py: the spectral path alone, on tile and random-pixel batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from markdown_report import number, section, tables

from benchmarks import path_diagnosis

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_tiles_hold_every_training_pixel_and_no_other():
    rng = np.random.default_rng(0)
    shape = (40, 50)
    train = np.sort(rng.choice(40 * 50, 300, replace=False))
    tiles = path_diagnosis.training_tiles(train, shape)
    covered = np.concatenate(tiles)
    assert set(covered) == set(train)
    # 32x32 tiles every 16 pixels, the last flush with the border: rows 0, 8; columns 0, 16, 18.
    assert len(tiles) == 6
    assert all(len(np.unique(t)) == len(t) for t in tiles)


def test_tiles_are_the_scene_datamodules_training_tiles(shared_data, tmp_path):
    from benchmarks.accuracy import draw_split
    from terratorch_hsi_peft.datamodules import HyperspectralSceneDataModule
    from terratorch_hsi_peft.datasets import IndianPines

    scene = IndianPines(shared_data / "indian_pines")
    split = draw_split(scene, "spatially_disjoint", 0, path_diagnosis.WINDOW)
    split.save(tmp_path / "split.npz")
    datamodule = HyperspectralSceneDataModule(
        scene=scene, split_file=str(tmp_path / "split.npz"), batch_size=8, tile_size=32
    )
    datamodule.setup("fit")
    dataset = datamodule.train_dataloader().dataset
    labelled = sorted(int((dataset[i]["mask"] >= 0).sum()) for i in range(len(dataset)))
    tiles = path_diagnosis.training_tiles(split.train, scene.labels.shape)
    assert sorted(len(t) for t in tiles) == labelled


def test_quick_run_writes_the_section(shared_data, tmp_path):
    results_md = tmp_path / "segmentation.md"
    argv = ["--data-root", str(shared_data), "--quick", "--results-md", str(results_md)]
    assert path_diagnosis.main(argv) == 0
    (_, batches), (_, neighbours) = tables(section(results_md.read_text(), "path-diagnosis"))
    # A row per way of batching and one per neighbourhood side, every cell an OA in %.
    assert len(batches) == 2 and len(batches[0]) == 4
    assert [number(row[0]) for row in neighbours] == list(path_diagnosis.WINDOWS)
    for cell in [*(c for row in batches for c in row[1:]), *(row[1] for row in neighbours)]:
        assert 0 <= number(cell) <= 100
