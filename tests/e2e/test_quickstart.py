"""The README's first command, shortened to one epoch: it trains, tests, maps and compares."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from terratorch_hsi_peft.datasets import load_scene, make_split
from terratorch_hsi_peft.metrics import confusion_matrix, overall_accuracy

# The repository's script (not part of the package), loaded from its file as `python` runs it.
_SPEC = importlib.util.spec_from_file_location(
    "quickstart", Path(__file__).resolve().parents[2] / "quickstart.py"
)
quickstart = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(quickstart)


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
@pytest.mark.slow
def test_quickstart_one_epoch(tmp_path, monkeypatch, shared_data, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["quickstart"])
    results = quickstart.main(["--data-root", str(shared_data), "--max-epochs", "1"])
    printed = capsys.readouterr().out

    saved = json.loads((tmp_path / "outputs" / "quickstart" / "results.json").read_text())
    assert saved == results
    # 10% of each class, a tenth of it held out for validation (102 pixels).
    assert (results["train_pixels"], results["test_pixels"]) == (928, 9219)
    assert results["val_pixels"] == 102
    model, svm = results["spectralgpt_small_full_finetuning"], results["svm_rbf"]
    smoothed = results["svm_rbf_smoothed"]
    assert 1 / 16 < model["OA"] <= 1  # one epoch: better than chance, not yet good
    # The SVM on standardised spectra lands near the literature's ~80% OA on this split.
    assert 0.77 < svm["OA"] < 0.83 and svm["C"] in quickstart.SVM_C_GRID
    # Smoothing, its window chosen on the validation pixels, helps on this leaky split.
    assert smoothed["window"] in quickstart.SMOOTHING_WINDOWS and smoothed["OA"] > svm["OA"]
    for figures in (model, svm, smoothed):
        assert f"{100 * figures['OA']:6.2f}" in printed
    assert "spatially leaky" in printed
    assert "terratorch fit -c configs/experiments/indian_pines/classification/krona_plus.yaml" in (
        printed
    )

    # The written map scores the logged OA on the split's test pixels.
    tif, png = (tmp_path / p for p in results["class_map"])
    assert png.suffix == ".png" and png.stat().st_size > 0
    with rasterio.open(tif) as source:
        predicted = source.read(1).reshape(-1).astype(np.int64) - 1
    scene = load_scene("indian_pines", shared_data / "indian_pines")
    split = make_split(scene.labels, "per_class", 0, train_size=0.1, val_size=0.1)
    truth = scene.labels.reshape(-1)[split.test] - 1
    oa = overall_accuracy(confusion_matrix(truth, predicted[split.test], 16))
    assert oa == pytest.approx(model["OA"], abs=1e-6)


def test_scene_folder_accepts_the_parent_or_the_scene_folder(shared_data, tmp_path):
    expected = (shared_data / "indian_pines").resolve()
    assert quickstart.scene_folder(shared_data) == expected
    assert quickstart.scene_folder(shared_data / "indian_pines") == expected
    with pytest.raises(SystemExit, match=r"Indian Pines not found under .*--data-root"):
        quickstart.scene_folder(tmp_path)


def test_svm_baseline_fits_on_training_pixels_only():
    # Two separable classes: the SVM learns them from the training pixels, and the test
    # pixels' labels (here flipped) play no part in the fit or the choice of C.
    rng = np.random.default_rng(0)
    spectra = np.concatenate([rng.normal(0, 1, (60, 5)), rng.normal(4, 1, (60, 5))])
    classes = np.repeat([0, 1], 60)
    train = np.arange(0, 120, 2)
    test = np.arange(1, 120, 2)
    logp, c = quickstart.svm_baseline(spectra, classes, train, num_classes=3)
    assert c in quickstart.SVM_C_GRID and logp.shape == (120, 3)
    np.testing.assert_allclose(np.exp(logp[:, 2]), 1e-6)  # a class with no training pixel
    predicted = logp.argmax(1)[test]
    assert (predicted == classes[test]).mean() > 0.95
    poisoned = classes.copy()
    poisoned[test] = 1 - poisoned[test]  # wrong test labels must not matter
    again, _ = quickstart.svm_baseline(spectra, poisoned, train, num_classes=3)
    np.testing.assert_array_equal(again, logp)


def test_smoothing_window_is_chosen_on_validation_pixels_only():
    # Left half class 0, right half class 1; per-pixel predictions carry isolated errors that
    # a 3 x 3 average removes. Validation pixels decide; test labels play no part.
    rng = np.random.default_rng(0)
    truth = np.zeros((20, 20), dtype=int)
    truth[:, 10:] = 1
    logp = np.log(np.where(np.eye(2)[truth] > 0, 0.9, 0.1))
    noisy = rng.random((20, 20)) < 0.1
    logp[noisy] = logp[noisy][:, ::-1]
    classes = truth.ravel()
    val = np.arange(0, 400, 3)
    window = quickstart.choose_window(logp, classes, val)
    assert window > 1
    smoothed = quickstart.smooth(logp, 3)
    # The 3 x 3 mean of a float64 reference, away from the border.
    reference = np.mean([logp[4 + dy, 5 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)], 0)
    np.testing.assert_allclose(smoothed[4, 5], reference)
    with pytest.raises(SystemExit, match="no validation pixels"):
        quickstart.choose_window(logp, classes, np.array([], dtype=int))
