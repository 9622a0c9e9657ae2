"""Every place the plugin relies on TerraTorch internals, each one small checked function.

Everywhere else the plugin uses TerraTorch's public surface: the registries, the model factories
and the tasks' init arguments. The functions here rely on more (attributes of tasks and models,
module-level names) that TerraTorch may change in any release. Each checks what it relies on
first and, when that differs, raises :class:`TerraTorchIncompatibleError` naming the TerraTorch
versions the plugin was tested with and what differs, instead of an AttributeError deep inside a
run. ``tests/test_terratorch_compat.py`` removes each internal in turn and checks the message.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = [
    "TESTED_VERSIONS",
    "TerraTorchIncompatibleError",
    "set_loss_class_weights",
    "terratorch_version",
]

#: TerraTorch releases the touch points were checked against (1.2.13 by ``make compat``).
TESTED_VERSIONS = ("1.2.11", "1.2.13")

#: The stock tasks whose internals the touch points rely on.
_STOCK_TASKS = "TerraTorch's ClassificationTask and SemanticSegmentationTask"

_MISSING = object()


class TerraTorchIncompatibleError(RuntimeError):
    """TerraTorch's internals differ from those of the versions the plugin was tested with."""


def terratorch_version() -> str:
    """The installed TerraTorch version (1.2 has no ``terratorch.__version__``)."""
    import terratorch

    found = getattr(terratorch, "__version__", None)
    if found:
        return str(found)
    try:
        return importlib.metadata.version("terratorch")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed as a distribution)"


def _incompatible(touch_point: str, differs: str) -> TerraTorchIncompatibleError:
    return TerraTorchIncompatibleError(
        f"{touch_point}: {differs}. terratorch-hsi-peft relies on this TerraTorch internal and "
        f"was tested with TerraTorch {' and '.join(TESTED_VERSIONS)}; TerraTorch "
        f"{terratorch_version()} is installed. Install a tested version "
        f"(pip install 'terratorch>={TESTED_VERSIONS[0]},<={TESTED_VERSIONS[-1]}') or a "
        "terratorch-hsi-peft release that supports yours."
    )


def _is_stock_task(task: Any) -> bool:
    from terratorch.tasks import ClassificationTask, SemanticSegmentationTask

    return isinstance(task, ClassificationTask | SemanticSegmentationTask)


def _task_attribute(task: Any, name: str, meaning: str, touch_point: str, user: str) -> Any:
    """``task.<name>``; missing on a stock task it is an incompatibility, else the wrong task."""
    value = getattr(task, name, _MISSING)
    if value is not _MISSING:
        return value
    if _is_stock_task(task):
        raise _incompatible(touch_point, f"{type(task).__name__} has no {name!r} ({meaning})")
    raise TypeError(
        f"{user} works with {_STOCK_TASKS} ({meaning}: task.{name}); {type(task).__name__} has "
        f"none. Use one of those tasks or remove {user}."
    )


def set_loss_class_weights(task: Any, weights: Sequence[float], user: str) -> None:
    """Weight the cross-entropy of a stock task by ``weights`` (one per class).

    Relies on: the stock tasks keep the loss ``configure_losses`` built in ``task.criterion``;
    ``loss: ce`` builds ``nn.CrossEntropyLoss``, whose ``weight`` buffer holds class weights.
    The buffer is not persistent, so checkpoints stay loadable by a task built without weights.

    Args:
        task: a ClassificationTask or SemanticSegmentationTask.
        weights: one weight per class index.
        user: what sets the weights, for messages.

    Raises:
        ValueError: the task's loss is not ``ce``.
        TypeError: not a task with a ``criterion``.
        TerraTorchIncompatibleError: a stock task without ``criterion``.
    """
    criterion = _task_attribute(
        task, "criterion", "the loss configure_losses builds", "set_loss_class_weights", user
    )
    if not isinstance(criterion, nn.CrossEntropyLoss):
        raise ValueError(
            f"{user} weights the cross-entropy, but the task's loss is "
            f"{type(criterion).__name__}; set the task's loss: ce, or remove {user}."
        )
    weight = torch.as_tensor(weights, dtype=torch.float32, device=task.device)
    criterion.register_buffer("weight", weight, persistent=False)
