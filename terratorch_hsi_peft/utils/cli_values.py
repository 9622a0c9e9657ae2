"""Typed values from ``model_args`` overrides on the command line.

TerraTorch's tasks declare ``model_args`` as a plain ``dict``. jsonargparse therefore hands a
dotted override such as ``--model.init_args.model_args.num_classes 9`` to the model factory as
the *string* ``"9"``, and ``backbone_pretrained false`` as the truthy string ``"false"``
(flow collections like ``[1, 3]`` or ``{method: KRONA}`` are parsed). The factories read such
strings the way YAML 1.2 reads a plain scalar: booleans, null, integers and decimal numbers.
Any other string is kept as it is, so names, paths and regexes pass through untouched.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Mapping
from typing import Any

__all__ = ["TEXT_OPTIONS", "cli_scalar", "cli_scalars"]

logger = logging.getLogger(__name__)

# The YAML 1.2 core schema (not YAML 1.1's yes/no/on/off, which would turn names into booleans).
_BOOLEANS = {
    **dict.fromkeys(("true", "True", "TRUE"), True),
    **dict.fromkeys(("false", "False", "FALSE"), False),
}
_NULLS = {"null", "Null", "NULL", "~"}
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
    values: Mapping[str, Any], context: str, text: Collection[str] = ()
) -> dict[str, Any]:
    """A copy of ``values`` with every top-level value passed through :func:`cli_scalar`.

    ``context`` names the caller in the log line that lists what was converted. Keys in ``text``
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
    if changed:
        logger.info("%s: read string values as YAML scalars: %s", context, ", ".join(changed))
    return converted
