"""The shipped KronA+ experiments through the real ``terratorch`` command, on real Indian Pines.

For one classification and one segmentation experiment of configs/manifest.yaml, one module-scoped
``fit`` (a small SpectralGPT, a few steps) feeds ``test`` and ``predict`` in new processes, as a
user runs them. Checked: the checkpoint and the adapter file are written, the adapter file
reloads into a freshly built model, the test metrics are logged, and the class map of the whole
scene is written and agrees with the logged overall accuracy on the test pixels.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import yaml
from e2e_helpers import PEFT_FLAG, SMALL, small_copy
from safetensors.torch import load_file
from terratorch_cli import terratorch

from terratorch_hsi_peft.datasets import load_scene, make_split
from terratorch_hsi_peft.metrics import confusion_matrix, overall_accuracy
from terratorch_hsi_peft.models import PEFTEncoderDecoderFactory, load_model_adapters

FIT_STEPS = 3


class Run:
    """One experiment fitted in ``folder``, then tested and predicted from its checkpoint."""

    def __init__(self, experiment: str, folder: Path, root: Path) -> None:
        self.experiment = experiment
        self.folder = folder
        self.output = folder / "outputs" / experiment
        fit_args = small_copy(experiment, folder)
        model_file = next(a for a in fit_args if Path(a).parent == folder)  # the small copy
        self.config = yaml.safe_load(Path(model_file).read_text())
        self.peft_config = yaml.safe_load(fit_args[fit_args.index(PEFT_FLAG) + 1])
        common = [*fit_args[1:], "--data.init_args.root", root]
        terratorch(
            [
                "fit",
                *common,
                "--trainer.max_steps",
                FIT_STEPS,
                "--trainer.enable_progress_bar",
                "false",
            ],
            folder,
        )
        self.checkpoint = self.output / "version_0" / "checkpoints" / "last.ckpt"
        self.adapters = self.checkpoint.with_name("adapters.safetensors")
        # Large batches: test and predict cover every test pixel / the whole scene.
        after = [*common, "--ckpt_path", self.checkpoint, "--data.init_args.batch_size", 512]
        self.test_log = terratorch(["test", *after], folder)
        self.predict_log = terratorch(["predict", *after], folder)

    def logged(self) -> dict[str, float]:
        """The last row of every metrics.csv of the run (fit, then test), merged."""
        values: dict[str, float] = {}
        for path in sorted(self.output.rglob("metrics.csv"), key=os.path.getmtime):
            rows = list(csv.DictReader(path.open()))
            for row in rows:
                values.update({k: float(v) for k, v in row.items() if v not in ("", None)})
        return values


@pytest.fixture(scope="module")
def classification(tmp_path_factory, shared_data) -> Run:
    folder = tmp_path_factory.mktemp("classification")
    return Run("indian_pines/classification/krona_plus", folder, shared_data / "indian_pines")


@pytest.fixture(scope="module")
def segmentation(tmp_path_factory, shared_data) -> Run:
    folder = tmp_path_factory.mktemp("segmentation")
    return Run("indian_pines/segmentation/krona_plus", folder, shared_data / "indian_pines")


RUNS = ["classification", "segmentation"]


@pytest.mark.slow
@pytest.mark.parametrize("run_name", RUNS)
def test_fit_writes_a_checkpoint_and_one_adapter_file_that_reloads(run_name, request):
    run: Run = request.getfixturevalue(run_name)
    checkpoint = torch.load(run.checkpoint, map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == FIT_STEPS
    assert sorted(p.name for p in run.adapters.parent.glob("*.safetensors")) == [
        "adapters.safetensors"
    ]
    state = checkpoint["state_dict"]
    saved = load_file(run.adapters)
    adapter_keys = [k for k in saved if ".krona_" in k]
    assert len(adapter_keys) == 2 * 2 * SMALL["backbone_depth"]  # A and B, on q and v
    for key, tensor in saved.items():
        torch.testing.assert_close(tensor, state[f"model.{key}"], rtol=0, atol=0)
    # Training moved the zero-initialised factor, so the file holds trained values.
    assert any(saved[k].abs().sum() > 0 for k in adapter_keys if "krona_A" in k)

    task = run.config["model"]["init_args"]
    model_args = {**task["model_args"], "peft_config": run.peft_config}
    task_name = (
        "classification"
        if "Classification" in run.config["model"]["class_path"]
        else ("segmentation")
    )
    model = PEFTEncoderDecoderFactory().build_model(task_name, **model_args)
    # The run's backbone is randomly initialised: give the fresh model the same base weights
    # (the adapter file refuses other ones), then the file brings everything that trained.
    base = {
        key.removeprefix("model."): value
        for key, value in state.items()
        if key.startswith("model.encoder.") and key.removeprefix("model.") not in saved
    }
    model.load_state_dict(base, strict=False)
    loaded = load_model_adapters(model, run.adapters)
    assert set(loaded) == set(saved)
    fresh = model.state_dict()
    for key in saved:
        torch.testing.assert_close(fresh[key], state[f"model.{key}"], rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("run_name", RUNS)
def test_test_logs_oa_aa_kappa_and_the_confusion_matrix(run_name, request):
    run: Run = request.getfixturevalue(run_name)
    logged = run.logged()
    for name in ("test/OA", "test/AA", "test/Kappa"):
        assert name in logged, f"{name} not logged; test output:\n{run.test_log[-3000:]}"
    assert 0 < logged["test/OA"] <= 1 and 0 <= logged["test/AA"] <= 1
    assert -1 <= logged["test/Kappa"] <= 1
    matrices = list(run.output.rglob("confusion_matrix_test*.csv"))
    assert len(matrices) == 1
    rows = list(csv.reader(matrices[0].open()))
    counts = np.array([[int(v) for v in row[1:]] for row in rows[1:]])
    assert counts.shape == (16, 16)
    assert overall_accuracy(counts) == pytest.approx(logged["test/OA"], abs=1e-6)


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
@pytest.mark.slow
@pytest.mark.parametrize("run_name", RUNS)
def test_predict_writes_the_scene_map_that_scores_the_logged_oa(run_name, request, shared_data):
    run: Run = request.getfixturevalue(run_name)
    maps = sorted((run.output / "predictions").glob("indian_pines_class_map.*"))
    assert [p.suffix for p in maps] == [".png", ".tif"]
    with rasterio.open(maps[1]) as source:
        raw = source.read(1)
    assert raw.shape == (145, 145)
    assert raw.min() >= 1 and raw.max() <= 16  # every pixel predicted, labels 1..16

    scene = load_scene("indian_pines", shared_data / "indian_pines")
    split = make_split(scene.labels, "per_class", 0, train_size=0.1, val_size=0.1)
    truth = scene.labels.reshape(-1)[split.test] - 1
    predicted = raw.reshape(-1)[split.test].astype(np.int64) - 1
    oa = overall_accuracy(confusion_matrix(truth, predicted, 16))
    assert oa == pytest.approx(run.logged()["test/OA"], abs=1e-6)
