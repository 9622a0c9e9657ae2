"""benchmarks/recipe_study.py: one change per configuration, from the shipped quickstart YAML."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from benchmarks import recipe_study

REPO_ROOT = Path(__file__).resolve().parents[2]

STEPS = 200


def _quickstart() -> tuple[dict, dict]:
    recipe = recipe_study.load_recipe()
    return recipe["data"]["init_args"], recipe["model"]["init_args"]


def test_recipe_is_the_composed_quickstart_yaml():
    data, task = _quickstart()
    quickstart = yaml.safe_load((REPO_ROOT / "configs" / "quickstart.yaml").read_text())
    assert task == quickstart["model"]["init_args"]  # the task block is the quickstart's own
    shipped = yaml.safe_load((REPO_ROOT / "configs/data/indian_pines_patch.yaml").read_text())
    assert data == {**shipped["data"]["init_args"], **quickstart["data"]["init_args"]}


@pytest.mark.parametrize("factor", [f for f in recipe_study.FACTORS if f != "combined"])
def test_each_configuration_changes_one_thing(factor):
    data, task = _quickstart()
    base_data, base_task = recipe_study.configure("baseline", recipe_study.load_recipe(), STEPS, [])
    # The baseline is the quickstart with its cosine spread over the run's steps, without the
    # flips and the spectral path it adopted from the study.
    assert base_task["scheduler_hparams"] == {"T_max": STEPS, "interval": "step"}
    assert base_data == {
        k: v for k, v in data.items() if k not in ("train_transform", "append_spectra")
    }
    path = {"width": 64, "bands": 200, "loss": True}  # the path and its own loss
    assert task["model_args"]["spectral_path"] == path
    assert task["aux_loss"] == {"spectral_path": 1.0}
    assert task["lr_overrides"] == {"spectral_path": 1e-2}
    stock = {
        **{k: v for k, v in task.items() if k not in ("aux_loss", "lr_overrides")},
        "model_factory": "EncoderDecoderFactory",
        "model_args": {k: v for k, v in task["model_args"].items() if k != "spectral_path"},
    }
    assert {k: v for k, v in base_task.items() if k != "scheduler_hparams"} == {
        k: v for k, v in stock.items() if k != "scheduler_hparams"
    }
    new_data, new_task = recipe_study.configure(factor, recipe_study.load_recipe(), STEPS, [])
    changed = {k for k in {*new_data, *base_data} if new_data.get(k) != base_data.get(k)}
    changed |= {k for k in {*new_task, *base_task} if new_task.get(k) != base_task.get(k)}
    expected = {
        "baseline": set(),
        "flips": {"train_transform"},
        "flips_jitter": {"train_transform"},
        "label_smoothing": {"loss", "custom_loss", "custom_loss_kwargs"},
        "warmup_cosine": {"scheduler", "scheduler_hparams"},
        "onecycle": {"scheduler", "scheduler_hparams"},
        "route_all_pixels": {"_route_all_pixels"},
        "window_15": {"patch_size"},
        # One thing: the spectral path, whose input the datamodule appends.
        "spectral_path": {"append_spectra", "model_factory", "model_args"},
    }
    assert changed == expected[factor]
    if factor == "spectral_path":
        added = {
            k: v for k, v in new_task["model_args"].items() if k not in base_task["model_args"]
        }
        assert added == {"spectral_path": {"width": 64, "bands": 200}}


def test_path_refinements_add_to_the_spectral_path_and_need_it():
    recipe = recipe_study.load_recipe()
    _, path_task = recipe_study.configure(
        "combined", recipe, STEPS, ["spectral_path", "path_loss", "path_lr"]
    )
    _, plain = recipe_study.configure("spectral_path", recipe, STEPS, [])
    own_loss = {**plain["model_args"]["spectral_path"], "loss": True}
    assert path_task["model_args"] == {**plain["model_args"], "spectral_path": own_loss}
    assert path_task["aux_loss"] == {"spectral_path": 1.0}
    assert path_task["lr_overrides"] == {"spectral_path": 1e-2}
    with pytest.raises(ValueError, match="refines the spectral path"):
        recipe_study.configure("combined", recipe, STEPS, ["path_loss"])


def test_label_smoothing_and_warmup_build_with_terratorch_and_schedule_as_intended():
    from terratorch.tasks import ClassificationTask

    _, args = recipe_study.configure(
        "combined", recipe_study.load_recipe(), STEPS, ["label_smoothing", "warmup_cosine"]
    )
    task = ClassificationTask(**args)
    assert isinstance(task.criterion, torch.nn.CrossEntropyLoss)
    assert task.criterion.label_smoothing == 0.1
    optimizer_config = task.configure_optimizers()
    optimizer = optimizer_config["optimizer"]
    scheduler = optimizer_config["lr_scheduler"]["scheduler"]
    assert optimizer_config["lr_scheduler"]["interval"] == "step"
    lrs = []
    for _ in range(STEPS):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    peak = int(np.argmax(lrs))
    assert peak == STEPS // 10 and lrs[peak] == pytest.approx(1e-3)
    assert lrs[0] == pytest.approx(1e-5) and lrs[-1] < 1e-6


def test_all_pixels_route_is_fitted_on_the_whole_scene(shared_data):
    from terratorch_hsi_peft.datamodules import HyperspectralPatchDataModule
    from terratorch_hsi_peft.datasets import IndianPines

    scene = IndianPines(shared_data / "indian_pines")
    split = {"protocol": "per_class", "seed": 0, "train_size": 0.1}
    honest = HyperspectralPatchDataModule(scene=scene, split=split)
    transductive = recipe_study.AllPixelsPatchDataModule(scene=scene, split=split)
    everything = scene.image.reshape(-1, scene.num_bands)
    train = everything[honest.split.train]
    routed_all = transductive.route(torch.from_numpy(everything).T[:, :, None]).squeeze(-1)
    routed_train = honest.route(torch.from_numpy(train).T[:, :, None]).squeeze(-1)
    # Whitened components have zero mean and unit variance on the pixels they were fitted on.
    np.testing.assert_allclose(routed_all.mean(1).numpy(), 0, atol=1e-3)
    np.testing.assert_allclose(routed_train.mean(1).numpy(), 0, atol=1e-3)
    assert not torch.allclose(
        honest.route.state_dict()["mean"], transductive.route.state_dict()["mean"]
    )


@pytest.mark.slow
def test_quick_study_prints_the_table_writes_runs_and_docs_and_resumes(shared_data, tmp_path):
    runs, results_md = tmp_path / "runs.jsonl", tmp_path / "results.md"
    results_md.write_text("# Results\n\n## Accuracy\n\nkept as it is\n")
    command = [
        sys.executable,
        "-m",
        "benchmarks.recipe_study",
        "--quick",
        "--data-root",
        str(shared_data),
        "--splits",
        "spatially_disjoint",
        "--factors",
        "baseline",
        "flips",
        "--runs",
        str(runs),
        "--results-md",
        str(results_md),
    ]
    first = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-4000:]
    lines = [json.loads(line) for line in runs.read_text().splitlines()]
    assert [(r["factor"], r["split"], r["seed"]) for r in lines] == [
        ("svm_rbf", "spatially_disjoint", 0),
        ("baseline", "spatially_disjoint", 0),
        ("flips", "spatially_disjoint", 0),
    ]
    rows = [line for line in first.stdout.splitlines() if line.startswith("| `")]
    assert [row.split("|")[1].strip() for row in rows] == ["`baseline`", "`flips`", "`svm_rbf`"]
    text = results_md.read_text()
    assert "kept as it is" in text and "<!-- recipe:start -->" in text
    assert "## Training recipe study" in text

    again = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-4000:]
    assert len(runs.read_text().splitlines()) == 3  # nothing rerun
    assert again.stdout == first.stdout
