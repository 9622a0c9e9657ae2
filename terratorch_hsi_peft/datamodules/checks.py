"""Checks of the attached task and trainer against the data, shared by the datamodules.

Each raises a ValueError naming the setting to change, at ``setup``, before a step runs: a
mismatch would otherwise surface as a shape error deep in the model, or not at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning.pytorch.utilities import rank_zero_info

from terratorch_hsi_peft.terratorch_compat import terratorch_writers

__all__ = ["check_model_args", "check_prediction_writer", "check_task_kind"]


def check_task_kind(module: Any, expected: str, fits: Mapping[str, str], fix: str) -> None:
    """The task is not the other stock TerraTorch task.

    Args:
        module: the attached LightningModule.
        expected: the task the batches are made for (``ClassificationTask``, ...).
        fits: for each stock task, what serves it (a datamodule, a formulation).
        fix: the message's fix, formatted with ``task`` (the task found) and ``fits`` (what
            serves it).
    """
    mro = {cls.__name__ for cls in type(module).__mro__}
    for task, serves in fits.items():
        if task in mro and task != expected:
            raise ValueError(fix.format(task=task, fits=serves))


def check_model_args(model_args: Mapping[str, Any], expected: Mapping[str, int], data: str) -> None:
    """Each key of ``expected`` the task's ``model_args`` set is exactly the data's int.

    Args:
        model_args: the task's ``model_args``.
        expected: the value the data give for each key.
        data: what the data are, for the message (the scene and the band route).
    """
    for key, value in expected.items():
        read = model_args.get(key)
        exact = isinstance(read, int) and not isinstance(read, bool) and read == value
        if read is not None and not exact:
            raise ValueError(
                f"The task's model_args.{key} is {read!r} but the data give {value} "
                f"({data}); set {key}: {value}."
            )


def check_prediction_writer(trainer: Any, owner: str) -> None:
    """TerraTorch's ``CustomWriter`` cannot write the hyperspectral datamodules' batches:
    ClassMapWriter replaces it.

    Without a ClassMapWriter (``config_deploy.yaml`` drops ``trainer.callbacks``) one is
    added, with its defaults; the datamodule's setup runs before the callbacks' setup, so it
    takes part in the whole ``predict``.
    """
    callbacks = trainer.callbacks
    if not terratorch_writers(callbacks):
        return
    # Imported here: the writer pulls in matplotlib and rasterio, needed only to predict.
    from terratorch_hsi_peft.callbacks.class_map_writer import ClassMapWriter

    writers = [cb for cb in callbacks if isinstance(cb, ClassMapWriter)]
    if any(cb.replace_terratorch_writer for cb in writers):
        return
    if not writers:
        callbacks.append(ClassMapWriter())
        rank_zero_info(
            f"{owner}: trainer.callbacks has no ClassMapWriter (a config_deploy.yaml has no "
            "callbacks); added one to write the class map."
        )
        return
    raise ValueError(
        f"predict with {owner} needs the plugin's ClassMapWriter with "
        "replace_terratorch_writer: true (its default): TerraTorch's CustomWriter, which the "
        "terratorch command always adds, cannot write these batches (it expects a GeoTIFF "
        "file name per sample). Remove replace_terratorch_writer: false from the "
        "ClassMapWriter of trainer.callbacks."
    )
