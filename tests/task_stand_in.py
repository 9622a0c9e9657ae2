"""A stand-in for the task a datamodule's ``setup`` checks its data against."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest


def fit_setup(datamodule: Any, model_args: dict, message: str | None, **hparams: Any) -> None:
    """``setup("fit")`` under a stand-in task with ``model_args`` (and more ``hparams``):
    passes, or raises ``message``."""
    datamodule.trainer = SimpleNamespace(
        lightning_module=SimpleNamespace(hparams={"model_args": model_args, **hparams})
    )
    if message is None:
        datamodule.setup("fit")
    else:
        with pytest.raises(ValueError, match=message):
            datamodule.setup("fit")
