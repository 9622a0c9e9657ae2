"""benchmarks/segmentation_study.py: one change per configuration, from the grid's formulation."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import segmentation_study

REPO_ROOT = Path(__file__).resolve().parents[2]


def _changes(factor: str) -> set[str]:
    base = segmentation_study.configure("baseline", quick=False)
    new = segmentation_study.configure(factor, quick=False)
    changed = {
        f"geometry.{field.name}"
        for field in dataclasses.fields(base["geometry"])
        if getattr(base["geometry"], field.name) != getattr(new["geometry"], field.name)
    }
    for part in ("data", "task"):
        old, now = base[part], new[part]
        changed |= {f"{part}.{k}" for k in {*old, *now} if repr(old.get(k)) != repr(now.get(k))}
    if base["val_fraction"] != new["val_fraction"]:
        changed.add("val_fraction")
    return changed


@pytest.mark.parametrize("factor", segmentation_study.FACTORS)
def test_each_configuration_changes_one_thing(factor):
    expected = {
        "baseline": set(),
        "patch_4": {"geometry.patch_size"},
        "tile_16": {"geometry.tile_size"},
        "stride_4": {"data.train_stride"},
        "flips": {"data.train_transform"},
        "label_smoothing": {"task.loss"},
        "weight_decay": {"task.optimizer_hparams"},
        "class_weights": {"data.class_weights"},
        "val_best": {"val_fraction"},
        "spectral_path": {"geometry.spectral_path"},
        # One thing: the spectral path on the whole spectrum (its input appended by the data).
        "full_spectrum": {
            "geometry.spectral_path",
            "geometry.full_spectrum",
            "data.append_spectra",
        },
        "inference_24": {"data.inference_stride"},
    }
    assert _changes(factor) == expected[factor]


def test_baseline_is_the_formulation_before_the_study():
    from benchmarks import hsi_models

    base = segmentation_study.configure("baseline", quick=False)["geometry"]
    # The accuracy grid's encoder; only the spectral path (the study's outcome) is off.
    assert base == dataclasses.replace(hsi_models.SMALL, **segmentation_study.PATH_OFF)
    assert hsi_models.SMALL.spectral_path and hsi_models.SMALL.full_spectrum
    assert hsi_models.SMALL.path_loss and hsi_models.SMALL.path_lr
    assert hsi_models.SMALL.path_window


@pytest.mark.parametrize(
    ("refinement", "expected"),
    [
        ("path_loss", {"geometry.path_loss"}),
        ("path_lr", {"geometry.path_lr"}),
        ("path_window", {"geometry.path_window"}),
    ],
)
def test_path_refinements_change_one_thing_of_the_path_and_need_it(refinement, expected):
    assert _changes(f"full_spectrum+{refinement}") - _changes("full_spectrum") == expected
    with pytest.raises(ValueError, match="join it after spectral_path or full_spectrum"):
        segmentation_study.configure(refinement, quick=False)
    # The refinements reach the stock task: its own loss weighted, the path's learning rate.
    from benchmarks import hsi_models

    config = segmentation_study.configure(f"full_spectrum+{refinement}", quick=True)
    task = hsi_models.build_task(
        "segmentation", config["geometry"], 3, 4, "FULL", 1e-3, spectra=5, **config["task"]
    )
    if refinement == "path_loss":
        assert task.hparams["model_args"]["spectral_path"]["loss"] is True
        assert task.hparams["aux_loss"] == {"spectral_path": 1.0}
    elif refinement == "path_lr":
        assert task.hparams["lr_overrides"] == {"spectral_path": 1e-2}
    else:
        assert task.hparams["model_args"]["spectral_path"]["window"] == 5
        assert task.model.spec.window == 5


def test_joined_factors_make_every_change():
    assert _changes("spectral_path+flips") == {"geometry.spectral_path", "data.train_transform"}


def test_unknown_factor_is_refused_with_the_choices(capsys):
    with pytest.raises(SystemExit):
        segmentation_study.parse_args(["--factors", "flips+mirror", "--report-only", "--runs", "x"])
    assert "unknown ['mirror']" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_run_appends_runs_and_writes_the_section(shared_data, tmp_path):
    runs, results_md = tmp_path / "runs.jsonl", tmp_path / "results.md"
    command = [
        sys.executable,
        "-m",
        "benchmarks.segmentation_study",
        "--quick",
        "--data-root",
        str(shared_data),
        "--factors",
        "baseline",
        "spectral_path+flips",
        "--runs",
        str(runs),
        "--results-md",
        str(results_md),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-4000:]
    stored = [json.loads(line) for line in runs.read_text().splitlines()]
    assert [r["factor"] for r in stored] == ["baseline", "spectral_path+flips"]
    assert all(len(r["per_class"]) == 16 and 0 <= r["oa"] <= 100 for r in stored)
    text = results_md.read_text()
    assert "## Segmentation study" in text and "| `spectral_path+flips` |" in text
    assert "Test accuracy per class" in text
    rows = text.count("`spectral_path+flips`")
    # A second section (e.g. a longer study) from its own runs keeps the first one.
    report_only = [*command, "--report-only", "--section", "seg-long", "--heading", "### Longer"]
    result = subprocess.run(report_only, capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-4000:]
    text = results_md.read_text()
    assert "## Segmentation study" in text and "<!-- seg-long:start -->" in text
    assert text.count("`spectral_path+flips`") == 2 * rows
