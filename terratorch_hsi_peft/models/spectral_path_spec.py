"""``model_args.spectral_path``, parsed once: the spectral path's settings and their checks.

The spectral path (:mod:`terratorch_hsi_peft.models.spectral_path`) is one mapping of
``PEFTEncoderDecoderFactory``'s ``model_args``::

    spectral_path:
      width: 64      # hidden width of the per-pixel path (required)
      bands: 200     # read the bands the datamodule appends (append_spectra); null: the encoder's
      loss: true     # also output the path's own logits, weighted by the task's aux_loss
      window: 5      # segmentation: average the path over 5x5 neighbours (odd; 1: none)

``spectral_path: 64`` is short for ``{width: 64}``; ``null`` (the default) builds no path.
:meth:`SpectralPathSpec.from_model_args` is the one parser, for both readers: the model factory
and the datamodules, which check the spec against the data they give with
:func:`check_spectral_path_data`. Values given as command-line strings (``"5"``, ``"true"``) are
read as YAML scalars here. The four flat keys of earlier releases (``spectral_path_bands``,
``spectral_path_loss``, ``spectral_path_window`` beside an int ``spectral_path``) are refused
with the mapping to write instead.

This module imports neither torch nor TerraTorch: the datamodules read it without the models.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from terratorch_hsi_peft.utils.cli_values import cli_scalar

__all__ = [
    "PATH_HEAD",
    "SPECTRAL_PATH_KEYS",
    "SpectralPathSpec",
    "check_spectral_path_data",
]

#: Name of the auxiliary output holding the path's own logits (the task's ``aux_loss`` key).
PATH_HEAD = "spectral_path"
#: The keys of the ``spectral_path`` mapping, in the order the docs list them.
SPECTRAL_PATH_KEYS = ("width", "bands", "loss", "window")
#: The flat ``model_args`` keys of earlier releases and the mapping key each became.
_FLAT_KEYS = {
    "spectral_path_bands": "bands",
    "spectral_path_loss": "loss",
    "spectral_path_window": "window",
}
_WHERE = "model_args.spectral_path"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class SpectralPathSpec:
    """The checked settings of a spectral path.

    Attributes:
        width: hidden width of the path (>= 1).
        bands: bands appended after the encoder's that the path reads instead of the encoder's
            input (the datamodule's ``append_spectra``: the scene's band count); None: the path
            reads the encoder's (band-routed) input.
        loss: the model also outputs the path's own logits in training as the auxiliary head
            :data:`PATH_HEAD`, for the task's ``aux_loss: {spectral_path: <weight>}``.
        window: segmentation only: side of the neighbourhood the path's output is averaged over
            (odd; 1: each pixel's own).
    """

    width: int
    bands: int | None = None
    loss: bool = False
    window: int = 1

    def __post_init__(self) -> None:
        if not _is_int(self.width) or self.width < 1:
            raise ValueError(
                f"{_WHERE}.width={self.width!r} must be a positive integer (the hidden width of "
                "the per-pixel path, e.g. 64)."
            )
        if self.bands is not None and (not _is_int(self.bands) or self.bands < 1):
            raise ValueError(
                f"{_WHERE}.bands={self.bands!r} must be a positive integer (the bands the "
                "datamodule appends with append_spectra: true, the scene's band count) or null "
                "(the path reads the encoder's input)."
            )
        if not isinstance(self.loss, bool):
            raise ValueError(
                f"{_WHERE}.loss={self.loss!r} must be true or false (true: the model also "
                "outputs the path's own logits, weighted by the task's aux_loss)."
            )
        if not _is_int(self.window) or self.window < 1 or self.window % 2 == 0:
            raise ValueError(
                f"{_WHERE}.window={self.window!r} must be a positive odd integer (the side of "
                "the neighbourhood the path's output is averaged over, e.g. 5; 1: none)."
            )

    @classmethod
    def from_config(cls, value: Any) -> SpectralPathSpec | None:
        """The spec of a ``spectral_path`` value: a mapping, its width alone, or null (None).

        Raises:
            ValueError: a value of another type, unknown or missing keys, or a bad value.
        """
        value = cli_scalar(value)
        if value is None:
            return None
        if _is_int(value):  # the width alone: spectral_path: 64
            return cls(width=value)
        if not isinstance(value, Mapping):
            raise ValueError(
                f"{_WHERE} is {value!r}; give a mapping such as {{width: 64, bands: 200, "
                "loss: true, window: 5} (width required), its width alone (e.g. 64), or null "
                "for no path (docs/configuration.md)."
            )
        unknown = sorted(set(value) - set(SPECTRAL_PATH_KEYS))
        if unknown:
            raise ValueError(
                f"{_WHERE} has unknown keys {unknown}; its keys are "
                f"{', '.join(SPECTRAL_PATH_KEYS)} (docs/configuration.md)."
            )
        values = {key: cli_scalar(item) for key, item in value.items()}
        if values.get("width") is None:
            raise ValueError(
                f"{_WHERE} has no width ({dict(value)!r}); set {_WHERE}.width to the path's "
                "hidden width (e.g. {width: 64, ...}), or spectral_path: null for no path. On "
                "the command line a dotted override such as "
                "--model.init_args.model_args.spectral_path.window 5 replaces the whole mapping "
                "(TerraTorch's model_args is an untyped dict): give it whole, e.g. "
                '--model.init_args.model_args.spectral_path "{width: 64, bands: 200, window: 5}".'
            )
        return cls(**values)

    @classmethod
    def from_model_args(cls, model_args: Mapping[str, Any]) -> SpectralPathSpec | None:
        """The spec of ``model_args["spectral_path"]`` (None: no path).

        Raises:
            ValueError: the flat keys of earlier releases (the message shows the mapping to
                write instead), or as :meth:`from_config`.
        """
        flat = [key for key in _FLAT_KEYS if key in model_args]
        if flat:
            raise ValueError(_flat_keys_message(model_args, flat))
        return cls.from_config(model_args.get("spectral_path"))


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def _flat_keys_message(model_args: Mapping[str, Any], flat: list[str]) -> str:
    """The error for the flat keys of earlier releases, with the mapping to write instead."""
    width = cli_scalar(model_args.get("spectral_path"))
    if isinstance(width, Mapping):
        width = width.get("width")
    values = {_FLAT_KEYS[key]: cli_scalar(model_args[key]) for key in flat}
    named = ", ".join(f"model_args.{key}" for key in flat)
    head = (
        f"{named} {'are' if len(flat) > 1 else 'is'} no longer read: the spectral path's "
        "settings are one mapping, model_args.spectral_path: {width, bands, loss, window} "
        "(docs/configuration.md)."
    )
    defaults = {field.name: field.default for field in dataclasses.fields(SpectralPathSpec)}
    # Each at its default, compared with its type (True == 1 would pass for window's 1).
    unset = all(
        type(value) is type(defaults[key]) and value == defaults[key]
        for key, value in values.items()
    )
    if width is None and unset:
        they = "they set" if len(flat) > 1 else "it sets"
        return f"{head} spectral_path is unset, so {they} nothing: remove {', '.join(flat)}."
    entries = {"width": _yaml_scalar(width) if width is not None else "<hidden width, e.g. 64>"}
    entries.update({key: _yaml_scalar(values[key]) for key in SPECTRAL_PATH_KEYS if key in values})
    mapping = ", ".join(f"{key}: {item}" for key, item in entries.items())
    return f"{head} Write instead (and remove {', '.join(flat)}):\n  spectral_path: {{{mapping}}}"


def check_spectral_path_data(
    model_args: Mapping[str, Any],
    aux_loss: Any,
    appended: int,
    scene_bands: int,
    data: str,
) -> SpectralPathSpec | None:
    """Check the task's spectral path against the data a datamodule gives; return its spec.

    Args:
        model_args: the task's ``model_args`` (as :func:`~terratorch_hsi_peft.utils.cli_values.
            task_model_args` gives them).
        aux_loss: the task's ``aux_loss`` (weights by auxiliary head name, or None).
        appended: bands the datamodule appends after the routed ones (``append_spectra``; 0:
            none).
        scene_bands: the scene's band count, what ``append_spectra: true`` appends.
        data: the datamodule's settings behind ``appended``, for messages.

    Raises:
        ValueError: the path reads appended bands the data do not give (or not the ones they
            give); the path's own loss is on without a weight in ``aux_loss``, or weighted
            without the model outputting it (TerraTorch would stop at the first step with an
            unclear message, or ignore the weight without a word); or as
            :meth:`SpectralPathSpec.from_model_args`.
    """
    spec = SpectralPathSpec.from_model_args(model_args)
    read = spec.bands if spec is not None else None
    if (read or 0) != appended:
        path = f"{_WHERE}.bands is {read!r}" if spec is not None else f"{_WHERE} is unset"
        raise ValueError(
            f"The task's {path} but the data append {appended} spectral bands ({data}); set "
            f"append_spectra: true and {_WHERE}.bands: {scene_bands} together, or neither."
        )
    path_loss = spec is not None and spec.loss
    weighted = isinstance(aux_loss, Mapping) and PATH_HEAD in aux_loss
    if path_loss and not weighted:
        raise ValueError(
            f"{_WHERE}.loss is true, so the model outputs the spectral path's own logits as "
            f"the auxiliary head {PATH_HEAD!r}, but the task's aux_loss gives them no weight "
            f"({aux_loss!r}); set aux_loss: {{{PATH_HEAD}: 1.0}} in the task's init_args or "
            f"{_WHERE}.loss: false."
        )
    if weighted and not path_loss:
        has = f"{_WHERE}.loss is false" if spec is not None else f"{_WHERE} is unset"
        raise ValueError(
            f"The task's aux_loss weights {PATH_HEAD!r}, but the model has no such head "
            f"({has}); set {_WHERE}.loss: true (with a width) or remove the aux_loss entry."
        )
    return spec
