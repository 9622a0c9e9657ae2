"""The adapter-method registry: every method declares itself once, in its own module.

A method module in :mod:`terratorch_hsi_peft.adapters.methods` defines its layer (an
:class:`~terratorch_hsi_peft.adapters.base.AdapterLinear`) and its options (a :class:`MethodOptions`
dataclass: each field is one ``peft_config_kwargs`` key with its type, default, check and meaning),
then calls :func:`register_method`. Config validation, injection, the model factory's routing,
the docs' method tables, the test parametrisations and the efficiency benchmark's variants all
read this registry; the package imports every module of ``methods/`` on import.

Names shared with Hugging Face ``peft`` (such as ``LORA`` and ``LOKR``) must be declared with
``hf_peft_name_clash`` (registration raises otherwise): ``"plugin"`` means a ``peft_config``
without ``backend`` gets the plugin's method (the factory logs it and names ``backend: hf``);
``"require_backend"`` makes such a ``peft_config`` an error that names both choices (the choice
for a method added after Hugging Face ``peft`` had the name: existing configs meant theirs).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from terratorch_hsi_peft.adapters.base import AdapterLinear

__all__ = [
    "COMMON_KEYS",
    "AdapterMethod",
    "MethodOptions",
    "find_method",
    "get_method",
    "hf_peft_methods",
    "method_names",
    "methods_markdown",
    "normalise_name",
    "option",
    "register_method",
    "registered_methods",
]

#: ``peft_config_kwargs`` keys every method takes (fields of ``AdapterConfig``), with their docs.
COMMON_KEYS = {
    "target_modules": (
        "list[str] or str",
        "required",
        "Linears to adapt: names matched like Hugging Face `peft` (`[attn.q, attn.v]`), or one "
        "full-match regex string; every entry must match at least one module",
    ),
    "dropout": ("float", "0.0", "dropout on the adapter's input path"),
}


def option(default: Any, check: Callable[[str, Any], Any], doc: str) -> Any:
    """One ``peft_config_kwargs`` key of a :class:`MethodOptions` dataclass.

    Args:
        default: its value when the key is left out.
        check: ``check(name, value)`` returns the value normalised (e.g. a list as a tuple) or
            raises TypeError/ValueError naming the problem and the fix.
        doc: its meaning, one line (the docs' options table shows it).
    """
    return field(default=default, metadata={"check": check, "doc": doc})


@dataclass(frozen=True)
class MethodOptions:
    """Base of a method's options: every field is declared with :func:`option`.

    Construction checks each field with its ``check``; subclasses add cross-field checks in
    ``__post_init__`` (calling ``super().__post_init__()`` first).
    """

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, f.metadata["check"](f.name, getattr(self, f.name)))

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """The method-specific ``peft_config_kwargs`` keys, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def as_dict(self) -> dict[str, Any]:
        """The values by key, tuples as lists (as YAML and JSON write them)."""
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in dataclasses.fields(self)
        }


@dataclass(frozen=True)
class AdapterMethod:
    """Everything about one adapter method.

    Attributes:
        name: the ``peft_config`` ``method`` value, upper case (``"KRONA_PLUS"``); parsing is
            case-insensitive and reads ``+`` as ``_PLUS``.
        label: display name (``"KronA+"``), used in tables.
        summary: one line for the docs' method table.
        layer: the :class:`~terratorch_hsi_peft.adapters.base.AdapterLinear` subclass it puts on
            each target; built as ``layer(base_linear, adapter_config, name=...)``.
        options: its :class:`MethodOptions` dataclass (keys beyond ``target_modules`` and
            ``dropout``).
        lr_ratio: which factor gets ``lr_ratio`` times the learning rate, for the docs; empty
            for a method without lambda.
        hf_peft_name_clash: ``None`` for a name Hugging Face ``peft`` does not use; for one it
            uses, what a ``peft_config`` without ``backend`` means: ``"plugin"`` (this method) or
            ``"require_backend"`` (an error naming ``backend: plugin`` and ``backend: hf``).
    """

    name: str
    label: str
    summary: str
    layer: type[AdapterLinear]
    options: type[MethodOptions]
    lr_ratio: str = ""
    hf_peft_name_clash: Literal["plugin", "require_backend"] | None = None

    @property
    def has_lr_ratio(self) -> bool:
        """Whether one factor trains at ``lr_ratio`` times the learning rate."""
        return "lr_ratio" in self.options.option_names()


_METHODS: dict[str, AdapterMethod] = {}


def normalise_name(name: str) -> str:
    """``"KronA+"`` -> ``"KRONA_PLUS"``: upper case, ``+`` as ``_PLUS``, ``-`` as ``_``."""
    return name.strip().upper().replace("+", "_PLUS").replace("-", "_")


def register_method(method: AdapterMethod) -> AdapterMethod:
    """Add ``method`` to the registry (at import of its module) and return it.

    Raises:
        ValueError: the name is not in normal form, is registered already, or is also a
            Hugging Face ``peft`` method while ``hf_peft_name_clash`` is not declared.
        TypeError: ``options`` is not a :class:`MethodOptions` dataclass or ``layer`` is not an
            ``AdapterLinear``.
    """
    from terratorch_hsi_peft.adapters.base import AdapterLinear

    if method.name != normalise_name(method.name) or not method.name:
        raise ValueError(
            f"Method name {method.name!r} must be upper case with _PLUS for '+', e.g. "
            f"{normalise_name(method.name)!r}."
        )
    if method.name in _METHODS:
        raise ValueError(
            f"Adapter method {method.name} is registered already (by "
            f"{_METHODS[method.name].layer.__module__}); choose another name."
        )
    if not (isinstance(method.options, type) and issubclass(method.options, MethodOptions)):
        raise TypeError(f"{method.name}: options must be a MethodOptions dataclass.")
    if not (isinstance(method.layer, type) and issubclass(method.layer, AdapterLinear)):
        raise TypeError(f"{method.name}: layer must be an AdapterLinear subclass.")
    if method.hf_peft_name_clash not in (None, "plugin", "require_backend"):
        raise ValueError(
            f"{method.name}: hf_peft_name_clash must be None, 'plugin' or 'require_backend', got "
            f"{method.hf_peft_name_clash!r}."
        )
    clash = set(method.options.option_names()) & set(COMMON_KEYS)
    if clash:
        raise ValueError(f"{method.name}: {sorted(clash)} are common keys; do not redeclare them.")
    if method.name in hf_peft_methods() and method.hf_peft_name_clash is None:
        raise ValueError(
            f"{method.name} is also a Hugging Face peft method: declare "
            "hf_peft_name_clash='plugin' (a peft_config without backend means this method) or "
            "'require_backend' (such a peft_config must say backend: plugin or backend: hf), so "
            "neither shadows the other silently."
        )
    _METHODS[method.name] = method
    return method


def registered_methods() -> list[AdapterMethod]:
    """Every registered method, sorted by name."""
    return [_METHODS[name] for name in sorted(_METHODS)]


def method_names() -> list[str]:
    """The registered method names, sorted."""
    return sorted(_METHODS)


def find_method(name: str) -> AdapterMethod | None:
    """The method ``name`` denotes (``"krona+"``, ``"LoRA"``, ...), or None."""
    return _METHODS.get(normalise_name(name)) if isinstance(name, str) else None


def get_method(name: str | AdapterMethod) -> AdapterMethod:
    """The method ``name`` denotes.

    Raises:
        TypeError: ``name`` is not a string.
        ValueError: no such method; the message lists the registered ones.
    """
    if isinstance(name, AdapterMethod):
        return name
    if not isinstance(name, str):
        raise TypeError(f"PEFT method must be a string, got {type(name).__name__}.")
    method = find_method(name)
    if method is None:
        raise ValueError(f"Unknown PEFT method {name!r}; use one of {', '.join(method_names())}.")
    return method


@functools.cache
def hf_peft_methods() -> frozenset[str]:
    """The method names Hugging Face ``peft`` knows (empty when it is not installed)."""
    try:
        from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
    except ModuleNotFoundError:  # peft is optional: only the hf backend needs it
        return frozenset()
    return frozenset(str(getattr(name, "value", name)) for name in PEFT_TYPE_TO_CONFIG_MAPPING)


def methods_markdown() -> str:
    """The docs' method and option tables (docs/configuration.md's ``methods`` section)."""
    lines = [
        "| `method` | | lambda (`lr_ratio`) | also in Hugging Face `peft` | layer |",
        "|---|---|---|---|---|",
    ]
    clash = {
        None: "no",
        "plugin": "yes: without `backend` the plugin's",
        "require_backend": "yes: `backend` required",
    }
    for m in registered_methods():
        lines.append(
            f"| `{m.name}` | {m.summary} | {m.lr_ratio or '-'} | {clash[m.hf_peft_name_clash]} "
            f"| `{m.layer.__module__}.{m.layer.__name__}` |"
        )
    rows: dict[tuple[str, str, str, str], list[str]] = {}
    for m in registered_methods():
        for f in dataclasses.fields(m.options):
            default = "null" if f.default is None else repr(f.default).replace("'", '"')
            key = (f.name, _type_text(str(f.type)), default, f.metadata["doc"])
            rows.setdefault(key, []).append(m.name)
    first = {key[0]: i for i, key in reversed(list(enumerate(rows)))}
    rows = dict(sorted(rows.items(), key=lambda item: first[item[0][0]]))
    lines += [
        "",
        "| `peft_config_kwargs` key | type | default | methods | meaning |",
        "|---|---|---|---|---|",
    ]
    for key, (kind, default, doc) in COMMON_KEYS.items():
        lines.append(f"| `{key}` | `{kind}` | `{default}` | all | {doc} |")
    for (key, kind, default, doc), names in rows.items():
        lines.append(f"| `{key}` | `{kind}` | `{default}` | {', '.join(names)} | {doc} |")
    return "\n".join(lines)


def _type_text(annotation: str) -> str:
    """``Literal['A', 'B'] | None`` -> ``"A" or "B" or null`` (no ``|``: it splits table cells)."""
    text = re.sub(r"Literal\[(.*?)\]", lambda m: m.group(1).replace(", ", " | "), annotation)
    return text.replace("'", '"').replace("None", "null").replace(" | ", " or ")


# Checks shared by the methods' options (``option(default, check, doc)``).


def positive_int(name: str, value: Any) -> int:
    """A positive int (bool refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive integer, got {value!r}.")
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value}.")
    return value


def positive_float(name: str, value: Any) -> float:
    """A positive finite number, as float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a positive number, got {value!r}.")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value}.")
    return float(value)


def shape_or_none(name: str, value: Any) -> tuple[int, int] | None:
    """``None`` or two positive ints ``[rows, cols]``, as a tuple."""
    if value is None:
        return None
    if (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        return (int(value[0]), int(value[1]))
    raise ValueError(
        f"{name} must be two positive integers [rows, cols] (e.g. [24, 24]) or None for an "
        f"automatic choice, got {value!r}."
    )


def one_of(*choices: str) -> Callable[[str, Any], str]:
    """A check accepting exactly one of ``choices``."""
    shown = ", ".join(repr(c) for c in choices[:-1]) + f" or {choices[-1]!r}"

    def check(name: str, value: Any) -> str:
        if value not in choices:
            raise ValueError(f"{name} must be {shown}, got {value!r}.")
        return value

    return check


def rank_option(doc: str) -> Any:
    """``r``: a rank, default 8."""
    return option(8, positive_int, doc)


def alpha_option() -> Any:
    """``alpha``: the numerator of the ``alpha / r`` scale, default 8.0."""
    return option(8.0, positive_float, "the update is scaled by `alpha / r`")


def lr_ratio_option() -> Any:
    """``lr_ratio``: lambda of the "+" methods, default 16.0."""
    return option(16.0, positive_float, "lambda: learning-rate ratio of the lambda factor")


def kron_shape_options() -> tuple[Any, Any]:
    """``a_shape`` and ``b_shape`` of a Kronecker product ``A kron B``."""
    return (
        option(
            None,
            shape_or_none,
            "`[a1, a2]` of the first Kronecker factor; `null`: near sqrt(d) (768 -> 24)",
        ),
        option(
            None,
            shape_or_none,
            "`[b1, b2]` of the second; `a1*b1` = output and `a2*b2` = input width",
        ),
    )
