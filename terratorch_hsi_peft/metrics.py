"""The accuracy figures hyperspectral classification papers report, from a confusion matrix.

Functions take a (K, K) confusion matrix (rows: true class, columns: predicted class) and compute
in float64. The torchmetrics classes accumulate that matrix batch by batch (ignoring
``ignore_index``) and report one of these figures, so stock TerraTorch tasks can log them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torchmetrics.classification import MulticlassConfusionMatrix

__all__ = [
    "AverageAccuracy",
    "CohenKappa",
    "OverallAccuracy",
    "average_accuracy",
    "cohen_kappa",
    "confusion_matrix",
    "overall_accuracy",
    "per_class_accuracy",
]

ArrayLike = np.ndarray | torch.Tensor


def _numpy(values: ArrayLike) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def confusion_matrix(
    target: ArrayLike, preds: ArrayLike, num_classes: int, ignore_index: int | None = None
) -> np.ndarray:
    """Count (true, predicted) class pairs.

    Args:
        target: true class indices 0..K-1 (any shape).
        preds: predicted class indices, same shape.
        num_classes: K.
        ignore_index: target value whose entries are left out (e.g. -1 for unlabelled pixels).

    Returns:
        (K, K) int64 matrix; entry [i, j] counts pixels of class i predicted as class j.

    Raises:
        ValueError: shapes differ or a value lies outside 0..K-1.
    """
    target, preds = _numpy(target).reshape(-1), _numpy(preds).reshape(-1)
    if target.shape != preds.shape:
        raise ValueError(f"target has {target.size} entries but preds has {preds.size}.")
    if ignore_index is not None:
        keep = target != ignore_index
        target, preds = target[keep], preds[keep]
    for name, values in (("target", target), ("preds", preds)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(
                f"{name} holds class indices outside 0..{num_classes - 1}; pass class indices "
                "(raw label - 1) and set ignore_index for unlabelled entries."
            )
    pairs = target.astype(np.int64) * num_classes + preds.astype(np.int64)
    return np.bincount(pairs, minlength=num_classes**2).reshape(num_classes, num_classes)


def _checked(confmat: ArrayLike) -> np.ndarray:
    cm = _numpy(confmat).astype(np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"A confusion matrix is square (K, K); got shape {cm.shape}.")
    if cm.sum() == 0:
        raise ValueError("The confusion matrix is empty: no evaluated pixels.")
    return cm


def overall_accuracy(confmat: ArrayLike) -> float:
    """OA: the fraction of all evaluated pixels that are classified correctly."""
    cm = _checked(confmat)
    return float(np.trace(cm) / cm.sum())


def per_class_accuracy(confmat: ArrayLike) -> np.ndarray:
    """Per-class accuracy (producer's accuracy, recall): NaN for a class without true pixels."""
    cm = _checked(confmat)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / support, np.nan)


def average_accuracy(confmat: ArrayLike) -> float:
    """AA: mean per-class accuracy over the classes present among the true labels."""
    return float(np.nanmean(per_class_accuracy(confmat)))


def cohen_kappa(confmat: ArrayLike) -> float:
    """Cohen's kappa: agreement beyond chance, ``(p_o - p_e) / (1 - p_e)``.

    Returns 1.0 in the degenerate case ``p_e == 1`` with perfect agreement (one class only).
    """
    cm = _checked(confmat)
    total = cm.sum()
    observed = np.trace(cm) / total
    expected = float(cm.sum(axis=0) @ cm.sum(axis=1)) / total**2
    if expected == 1.0:
        return 1.0 if observed == 1.0 else 0.0
    return float((observed - expected) / (1.0 - expected))


class _FromConfusionMatrix(MulticlassConfusionMatrix):
    """Accumulates the confusion matrix; ``compute`` returns one scalar figure of it."""

    #: Figure computed from the (K, K) matrix; set by each subclass.
    figure: Callable[[np.ndarray], float]

    def compute(self) -> torch.Tensor:
        if self.confmat.sum() == 0:
            return torch.tensor(float("nan"), device=self.confmat.device)
        value = self.figure(self.confmat.detach().cpu().numpy())
        return torch.tensor(value, dtype=torch.float32, device=self.confmat.device)


class OverallAccuracy(_FromConfusionMatrix):
    """OA as a torchmetrics metric (args as ``MulticlassConfusionMatrix``: num_classes, ...)."""

    figure = staticmethod(overall_accuracy)


class AverageAccuracy(_FromConfusionMatrix):
    """AA (mean per-class accuracy over classes with true pixels) as a torchmetrics metric."""

    figure = staticmethod(average_accuracy)


class CohenKappa(_FromConfusionMatrix):
    """Cohen's kappa as a torchmetrics metric; ``confmat`` holds the accumulated matrix."""

    figure = staticmethod(cohen_kappa)
