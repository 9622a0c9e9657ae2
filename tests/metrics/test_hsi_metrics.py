"""OA, AA, kappa and the confusion matrix against scikit-learn on random predictions."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from terratorch_hsi_peft.metrics import (
    AverageAccuracy,
    CohenKappa,
    OverallAccuracy,
    average_accuracy,
    cohen_kappa,
    confusion_matrix,
    overall_accuracy,
    per_class_accuracy,
)

K = 7


def _random_labels(seed: int, n: int = 2000, skew: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(K) * (0.3 if skew else 5.0))
    target = rng.choice(K, size=n, p=p)
    # Predictions right about 60% of the time, so kappa is neither 0 nor 1.
    preds = np.where(rng.random(n) < 0.6, target, rng.integers(0, K, n))
    return target, preds


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("skew", [False, True])
def test_figures_match_sklearn(seed, skew):
    target, preds = _random_labels(seed, skew=skew)
    cm = confusion_matrix(target, preds, K)
    np.testing.assert_array_equal(cm, skm.confusion_matrix(target, preds, labels=range(K)))
    assert overall_accuracy(cm) == pytest.approx(skm.accuracy_score(target, preds), abs=1e-12)
    assert cohen_kappa(cm) == pytest.approx(skm.cohen_kappa_score(target, preds), abs=1e-12)
    present = np.unique(target)
    recall = skm.recall_score(target, preds, labels=present, average=None, zero_division=0)
    np.testing.assert_allclose(per_class_accuracy(cm)[present], recall, atol=1e-12)
    with warnings.catch_warnings():  # sklearn warns when a predicted class is never true
        warnings.simplefilter("ignore")
        balanced = skm.balanced_accuracy_score(target, preds)
    assert average_accuracy(cm) == pytest.approx(balanced, abs=1e-12)


def test_class_without_true_pixels_is_left_out_of_aa():
    target = np.array([0, 0, 1, 1, 1])
    preds = np.array([0, 2, 1, 1, 2])  # class 2 is predicted but never true
    cm = confusion_matrix(target, preds, 3)
    assert np.isnan(per_class_accuracy(cm)[2])
    assert average_accuracy(cm) == pytest.approx((0.5 + 2 / 3) / 2)


def test_ignore_index_drops_entries():
    target, preds = _random_labels(3)
    masked = target.copy()
    masked[::3] = -1
    keep = masked != -1
    np.testing.assert_array_equal(
        confusion_matrix(torch.from_numpy(masked), torch.from_numpy(preds), K, ignore_index=-1),
        skm.confusion_matrix(target[keep], preds[keep], labels=range(K)),
    )


def test_bad_input_is_explained():
    with pytest.raises(ValueError, match=r"outside 0\.\.6"):
        confusion_matrix(np.array([0, 7]), np.array([0, 1]), K)
    with pytest.raises(ValueError, match="entries"):
        confusion_matrix(np.array([0, 1]), np.array([0]), K)
    with pytest.raises(ValueError, match="empty"):
        overall_accuracy(np.zeros((K, K)))
    with pytest.raises(ValueError, match="square"):
        cohen_kappa(np.ones((2, 3)))


def test_torchmetrics_classes_accumulate_batches_like_sklearn():
    target, preds = _random_labels(4)
    target[::5] = -1  # unlabelled pixels, as the segmentation datamodule sends them
    keep = target != -1
    metrics = [m(num_classes=K, ignore_index=-1) for m in (OverallAccuracy, AverageAccuracy)]
    metrics.append(CohenKappa(num_classes=K, ignore_index=-1))
    for chunk in np.array_split(np.arange(len(target)), 4):
        for metric in metrics:
            metric.update(torch.from_numpy(preds[chunk]), torch.from_numpy(target[chunk]))
    oa, aa, kappa = (float(m.compute()) for m in metrics)
    assert oa == pytest.approx(skm.accuracy_score(target[keep], preds[keep]), abs=1e-6)
    assert aa == pytest.approx(skm.balanced_accuracy_score(target[keep], preds[keep]), abs=1e-6)
    assert kappa == pytest.approx(skm.cohen_kappa_score(target[keep], preds[keep]), abs=1e-6)


def test_metric_without_updates_is_nan():
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert torch.isnan(CohenKappa(num_classes=K).compute())
