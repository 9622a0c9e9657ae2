"""Typed values from ``model_args`` overrides on the command line.

TerraTorch's tasks declare ``model_args`` as a plain ``dict``. jsonargparse therefore hands a
dotted override such as ``--model.init_args.model_args.num_classes 9`` to the model factory as
the *string* ``"9"``, and ``backbone_pretrained false`` as the truthy string ``"false"``
(flow collections like ``[1, 3]`` or ``{method: KRONA}`` are parsed). Such strings are read the
way YAML 1.2 reads a plain scalar: booleans, null, integers and decimal numbers. Any other string
is kept as it is, so names, paths and regexes pass through untouched.

They are read once, where ``model_args`` enter the plugin, so the code behind receives typed
values:

- a factory's arguments: :func:`cli_typed` decorates ``build_model`` (and the backbone factories
  read their keyword arguments with :func:`cli_scalars` at their one registration wrapper);
- the task's ``model_args`` as the datamodules, callbacks and checkpoint tools read them from the
  task's hyperparameters (TerraTorch keeps them as given): :func:`task_model_args`.

The datamodules' and callbacks' own init arguments are typed by their signatures (jsonargparse
converts them), so they need nothing here.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

__all__ = ["TEXT_OPTIONS", "cli_scalar", "cli_scalars", "cli_typed", "task_model_args"]

F = TypeVar("F", bound=Callable[..., Any])

logger = logging.getLogger(__name__)

# The YAML 1.2 core schema (not YAML 1.1's yes/no/on/off, which would turn names into booleans).
_BOOLEANS = {
    **dict.fromkeys(("true", "True", "TRUE"), True),
    **dict.fromkeys(("false", "False", "FALSE"), False),
}
# "None": what a dotted "null" override of a model_args key arrives as through TerraTorch's CLI
# (jsonargparse turns the null into None, then the untyped dict's value into its text).
_NULLS = {"null", "Null", "NULL", "~", "None"}
#: ``model_args`` keys whose values are text even when they look like numbers (``backbone_*``
#: as the model factory sees them, the bare names as the backbone factories do).
TEXT_OPTIONS = (
    "ckpt_path",
    "ckpt_sha256",
    "backbone_ckpt_path",
    "backbone_ckpt_sha256",
)
_INT = re.compile(r"[-+]?[0-9]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")


def cli_scalar(value: Any) -> Any:
    """``value`` with a string that reads as a YAML boolean, null, int or float converted."""
    if not isinstance(value, str):
        return value
    if value in _BOOLEANS:
        return _BOOLEANS[value]
    if value in _NULLS:
        return None
    if _INT.fullmatch(value):
        return int(value)
    if _FLOAT.fullmatch(value):
        return float(value)
    return value


def cli_scalars(
    values: Mapping[str, Any], context: str | None, text: Collection[str] = ()
) -> dict[str, Any]:
    """A copy of ``values`` with every top-level value passed through :func:`cli_scalar`.

    ``context`` names the caller in the log line that lists what was converted (None: no log
    line, for readers that only check values already logged by the factory). Keys in ``text``
    (file paths, digests) keep their string unless it is a YAML null: a file named ``2024`` is
    not the number 2024.
    """
    converted = {
        key: (None if value in _NULLS else value)
        if key in text and isinstance(value, str)
        else cli_scalar(value)
        for key, value in values.items()
    }
    changed = [f"{k}={values[k]!r} -> {v!r}" for k, v in converted.items() if v is not values[k]]
    if changed and context is not None:
        logger.info("%s: read string values as YAML scalars: %s", context, ", ".join(changed))
    return converted


def cli_typed(skip: Collection[str] = (), text: Collection[str] = TEXT_OPTIONS) -> Callable[[F], F]:
    """Decorate a function whose arguments may come from the command line as strings.

    Every argument but ``self`` and those in ``skip`` (named ones and each entry of ``**kwargs``)
    goes through :func:`cli_scalars` once before the call, with ``text`` keys kept as text; one
    log line lists what was converted.
    """

    def decorate(func: F) -> F:
        signature = inspect.signature(func)
        var_keyword = next(
            (p.name for p in signature.parameters.values() if p.kind is p.VAR_KEYWORD), None
        )

        @functools.wraps(func)
        def typed(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            arguments = bound.arguments
            named = {k: v for k, v in arguments.items() if k not in (*skip, "self", var_keyword)}
            extra = arguments.get(var_keyword, {}) if var_keyword else {}
            read = cli_scalars({**named, **extra}, func.__qualname__, text=text)
            arguments.update({k: read[k] for k in named})
            if var_keyword:
                arguments[var_keyword] = {k: read[k] for k in extra}
            return func(*bound.args, **bound.kwargs)

        return typed  # type: ignore[return-value]

    return decorate


def task_model_args(hparams: Mapping[str, Any] | None) -> dict[str, Any]:
    """The task's ``model_args`` from its hyperparameters, typed (empty when it has none).

    TerraTorch's tasks keep ``model_args`` as given, so a dotted override leaves the string
    ``"16"`` there; readers outside the factory (datamodule checks, callbacks, checkpoint tools)
    take them from here instead of reading each key themselves.
    """
    model_args = (hparams or {}).get("model_args")
    if not isinstance(model_args, Mapping):
        return {}
    return cli_scalars(model_args, None, text=TEXT_OPTIONS)
