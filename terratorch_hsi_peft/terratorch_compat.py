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
import inspect
import sys
import types
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from lightning.pytorch import Callback, Trainer
from torch import nn
from torchmetrics import MetricCollection

__all__ = [
    "TESTED_VERSIONS",
    "TerraTorchIncompatibleError",
    "adopt_stock_model",
    "crop_pixel_wise_output",
    "guard_stock_peft",
    "override_freeze_encoder",
    "pad_stock_input",
    "remove_terratorch_writers",
    "restore_freeze_encoder",
    "set_loss_class_weights",
    "task_metric_collections",
    "task_model",
    "terratorch_version",
    "terratorch_writers",
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


def _names_used(function: Callable) -> tuple[str, ...]:
    """Global and attribute names a function's code refers to (what it calls, unresolved)."""
    code = getattr(inspect.unwrap(function), "__code__", None)
    return code.co_names if code is not None else ()


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


def override_freeze_encoder(model: nn.Module, replacement: Callable[[nn.Module], None]) -> None:
    """Make ``freeze_backbone: true`` call ``replacement(model)`` instead of the stock freeze.

    Relies on: the stock tasks' ``configure_models`` calls ``self.model.freeze_encoder()`` for
    ``freeze_backbone: true``, after the model factory returned, and TerraTorch's models define
    ``freeze_encoder``. The override is set on this instance only (see
    :func:`restore_freeze_encoder`).

    Raises:
        TerraTorchIncompatibleError: ``configure_models`` no longer calls ``freeze_encoder``, or
            the model has none.
    """
    from terratorch.tasks import ClassificationTask

    touch_point = "override_freeze_encoder"
    if "freeze_encoder" not in _names_used(ClassificationTask.configure_models):
        raise _incompatible(
            touch_point,
            "the tasks' configure_models no longer calls model.freeze_encoder() for "
            "freeze_backbone, so freeze_backbone: true could freeze the adapters",
        )
    if not callable(getattr(model, "freeze_encoder", None)):
        raise _incompatible(
            touch_point,
            f"{type(model).__name__} has no freeze_encoder() to keep adapters trainable",
        )
    model.freeze_encoder = types.MethodType(replacement, model)


def restore_freeze_encoder(model: nn.Module) -> None:
    """Undo :func:`override_freeze_encoder`: the model's class method applies again."""
    model.__dict__.pop("freeze_encoder", None)


def guard_stock_peft(wrap: Callable[[Callable], Callable]) -> None:
    """Replace the function through which ``EncoderDecoderFactory`` applies Hugging Face peft.

    Relies on: ``EncoderDecoderFactory.build_model`` calls the module-level
    ``terratorch.models.encoder_decoder_factory.get_peft_backbone(peft_config, backbone)``.
    ``wrap`` receives the current function and returns its replacement.

    Raises:
        TerraTorchIncompatibleError: that function is gone or no longer called from there.
    """
    from terratorch.models import encoder_decoder_factory as module

    original = getattr(module, "get_peft_backbone", None)
    factory = getattr(module, "EncoderDecoderFactory", None)
    if not callable(original) or factory is None:
        raise _incompatible(
            "guard_stock_peft",
            "terratorch.models.encoder_decoder_factory has no get_peft_backbone or "
            "EncoderDecoderFactory",
        )
    if "get_peft_backbone" not in _names_used(factory.build_model):
        raise _incompatible(
            "guard_stock_peft",
            "EncoderDecoderFactory.build_model no longer applies peft through get_peft_backbone",
        )
    module.get_peft_backbone = wrap(original)


def task_metric_collections(
    task: Any, user: str
) -> tuple[MetricCollection, list[MetricCollection]]:
    """A stock task's validation metric collection and its test ones (one per dataloader).

    Relies on: ``configure_metrics`` builds ``task.val_metrics`` (a ``MetricCollection``) and
    ``task.test_metrics`` (a ``ModuleList`` of them), which the validation and test steps update
    and log; a metric added to them is computed and logged with the stock ones.

    Raises:
        TypeError: not a task with those collections.
        TerraTorchIncompatibleError: a stock task without them, or with collections of
            another type.
    """
    meaning = "the metric collections configure_metrics builds"
    val = _task_attribute(task, "val_metrics", meaning, "task_metric_collections", user)
    tests = _task_attribute(task, "test_metrics", meaning, "task_metric_collections", user)
    if not isinstance(tests, MetricCollection) and isinstance(tests, Iterable):
        tests = list(tests)  # the ModuleList
    else:
        tests = [tests]
    if not all(isinstance(c, MetricCollection) for c in [val, *tests]):
        found = f"{type(val).__name__} and {[type(c).__name__ for c in tests]}"
        if _is_stock_task(task):
            raise _incompatible(
                "task_metric_collections",
                f"{type(task).__name__}'s val_metrics / test_metrics are {found}, not a "
                "MetricCollection and a list of them",
            )
        raise TypeError(
            f"{user} needs val_metrics (a MetricCollection) and test_metrics (a list of them) "
            f"as {_STOCK_TASKS} have; {type(task).__name__} has {found}."
        )
    return val, tests


def task_model(task: nn.Module) -> nn.Module:
    """The model a TerraTorch task wraps (``task.model``), or the module itself for others.

    Relies on: TerraTorch's tasks keep the model their factory built in ``task.model``.

    Raises:
        TerraTorchIncompatibleError: a task of TerraTorch's without ``model``.
    """
    model = getattr(task, "model", None)
    if isinstance(model, nn.Module):
        return model
    if type(task).__module__.startswith("terratorch.tasks"):
        raise _incompatible(
            "task_model", f"{type(task).__name__}.model is {type(model).__name__}, not the model"
        )
    return task


def terratorch_writers(callbacks: Iterable[Callback]) -> list[Callback]:
    """The instances of TerraTorch's ``CustomWriter`` among ``callbacks``.

    Relies on: ``terratorch.cli_tools.CustomWriter`` is the prediction writer
    ``build_lightning_cli`` (the ``terratorch`` command) adds to every run. Before
    ``terratorch.cli_tools`` is imported, no callback can be one (nothing is imported here).

    Raises:
        TerraTorchIncompatibleError: ``terratorch.cli_tools`` has no ``CustomWriter`` class.
    """
    cli_tools = sys.modules.get("terratorch.cli_tools")
    if cli_tools is None:
        return []
    writer = getattr(cli_tools, "CustomWriter", None)
    if not isinstance(writer, type):
        raise _incompatible(
            "terratorch_writers",
            "terratorch.cli_tools has no CustomWriter class (the prediction writer the "
            "terratorch command adds to every run, which cannot write hyperspectral batches)",
        )
    return [cb for cb in callbacks if isinstance(cb, writer)]


def remove_terratorch_writers(trainer: Trainer) -> int:
    """Take TerraTorch's ``CustomWriter`` (see :func:`terratorch_writers`) off ``trainer``.

    Returns:
        How many were removed.
    """
    found = {id(cb) for cb in terratorch_writers(trainer.callbacks)}
    if found:
        trainer.callbacks = [cb for cb in trainer.callbacks if id(cb) not in found]
    return len(found)


#: What a copy of each stock model's ``forward`` (the spectral path's, models/spectral_path.py)
#: runs: the model's attributes and the helpers of ``terratorch.models.utils`` it calls.
_STOCK_FORWARD_PARTS = {
    "PixelWiseModel": (
        ("image_size_out", "patch_size", "padding", "encoder", "neck", "decoder", "head"),
        ("_check_for_single_channel_and_squeeze",),
        ("pad_images", "center_crop"),
    ),
    "ScalarOutputModel": (
        ("patch_size", "padding", "encoder", "neck", "decoder", "head"),
        (),
        ("pad_images",),
    ),
}


def adopt_stock_model(wrapper: nn.Module, model: nn.Module, stock: type) -> None:
    """Give ``wrapper`` every part and setting of ``model``, a ``stock`` model, as its own.

    ``wrapper`` is an instance of a subclass of ``stock`` whose ``__init__`` did not run; it
    re-implements ``stock.forward`` from the model's parts (the spectral path adds its output
    before the head) with :func:`pad_stock_input` and, for ``PixelWiseModel``,
    :func:`crop_pixel_wise_output`.

    Relies on: ``PixelWiseModel`` and ``ScalarOutputModel`` (``stock``) keep everything their
    ``forward`` uses in instance attributes set by ``__init__`` (public and private: copied
    whole); their ``forward`` pads with ``terratorch.models.utils.pad_images`` when
    ``patch_size`` and ``padding`` are set, then runs ``encoder``, ``neck(features,
    image_size=...)``, ``decoder`` on cloned features and ``head``; ``PixelWiseModel.forward``
    then squeezes a single channel (``_check_for_single_channel_and_squeeze``) and crops to
    ``image_size_out`` (``center_crop``).

    Raises:
        TerraTorchIncompatibleError: ``stock.forward`` no longer uses one of those names,
            ``terratorch.models.utils`` lacks a helper, or ``model`` lacks an attribute.
    """
    from terratorch.models import utils

    touch_point = "adopt_stock_model"
    attributes, methods, helpers = _STOCK_FORWARD_PARTS[stock.__name__]
    used = set(_names_used(stock.forward))
    dropped = [name for name in (*attributes, *methods, *helpers) if name not in used]
    if dropped:
        raise _incompatible(
            touch_point,
            f"{stock.__name__}.forward no longer uses {dropped}, which the spectral path's copy "
            "of it runs, so a model with a spectral path would compute another output",
        )
    gone = [name for name in helpers if not callable(getattr(utils, name, None))]
    if gone:
        raise _incompatible(touch_point, f"terratorch.models.utils has no {gone}")
    absent = [name for name in (*attributes, *methods) if not hasattr(model, name)]
    if absent:
        raise _incompatible(touch_point, f"{type(model).__name__} has no {absent}")
    nn.Module.__init__(wrapper)
    bookkeeping = set(vars(nn.Module()))
    for name, value in vars(model).items():
        if name not in bookkeeping:
            object.__setattr__(wrapper, name, value)
    for name, module in model.named_children():
        setattr(wrapper, name, module)


def pad_stock_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` padded as the stock models' ``forward`` pads it (see :func:`adopt_stock_model`)."""
    from terratorch.models.utils import pad_images

    if model.patch_size and model.padding is not None:
        return pad_images(x, model.patch_size, model.padding)
    return x


def crop_pixel_wise_output(
    model: nn.Module, logits: torch.Tensor, size: Sequence[int]
) -> torch.Tensor:
    """``logits`` finished as ``PixelWiseModel.forward`` finishes its mask: a single channel
    squeezed, centre-cropped to ``size`` (see :func:`adopt_stock_model`)."""
    from terratorch.models.utils import center_crop

    return center_crop(model._check_for_single_channel_and_squeeze(logits), size)
