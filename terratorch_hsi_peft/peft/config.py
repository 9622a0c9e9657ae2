"""Adapter methods and their validated hyperparameters.

The configuration is the dictionary TerraTorch takes as ``model_args.peft_config``::

    {"method": "KRONA_PLUS", "replace_qkv": None,
     "peft_config_kwargs": {"target_modules": ["attn.q", "attn.v"], "a_shape": [24, 24]}}

:meth:`AdapterConfig.from_peft_config` turns it into an :class:`AdapterConfig`, rejecting unknown
keys and out-of-range values with messages that name the problem and the fix.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, Literal

__all__ = ["AdapterConfig", "PeftMethod"]


class PeftMethod(StrEnum):
    """The adapter methods. Parsing is case-insensitive and accepts ``+`` for ``_PLUS``."""

    LORA = "LORA"
    LORA_PLUS = "LORA_PLUS"
    KRONA = "KRONA"
    KRONA_PLUS = "KRONA_PLUS"
    LOKR = "LOKR"

    @classmethod
    def parse(cls, value: str | PeftMethod) -> PeftMethod:
        """Return the method named by ``value`` ("krona+", "KronA_Plus", "LoRA", ...)."""
        if isinstance(value, PeftMethod):
            return value
        if not isinstance(value, str):
            raise TypeError(f"PEFT method must be a string, got {type(value).__name__}.")
        key = value.strip().upper().replace("+", "_PLUS").replace("-", "_")
        try:
            return cls(key)
        except ValueError:
            valid = ", ".join(m.value for m in cls)
            raise ValueError(f"Unknown PEFT method {value!r}; use one of {valid}.") from None

    @property
    def has_lr_ratio(self) -> bool:
        """Whether the method gives one factor ``lr_ratio`` times the learning rate."""
        return self in (PeftMethod.LORA_PLUS, PeftMethod.KRONA_PLUS)


_COMMON = ("target_modules", "dropout")
#: The ``peft_config_kwargs`` each method accepts.
VALID_KWARGS: dict[PeftMethod, tuple[str, ...]] = {
    PeftMethod.LORA: (*_COMMON, "r", "alpha"),
    PeftMethod.LORA_PLUS: (*_COMMON, "r", "alpha", "lr_ratio"),
    PeftMethod.KRONA: (*_COMMON, "a_shape", "b_shape", "scale", "zero_factor"),
    PeftMethod.KRONA_PLUS: (
        *_COMMON,
        "a_shape",
        "b_shape",
        "scale",
        "zero_factor",
        "lr_ratio",
        "lr_ratio_factor",
    ),
    PeftMethod.LOKR: (*_COMMON, "r", "alpha", "a_shape", "b_shape"),
}
#: Hugging Face peft spellings accepted so existing TerraTorch LoRA configs keep working.
ALIASES = {"lora_alpha": "alpha", "lora_dropout": "dropout", "loraplus_lr_ratio": "lr_ratio"}
_TOP_LEVEL_KEYS = ("method", "replace_qkv", "peft_config_kwargs")


@dataclass(frozen=True)
class AdapterConfig:
    """Validated adapter settings, shared by every adapted layer of a model.

    Attributes:
        method: the adapter method.
        target_modules: module names matched like Hugging Face peft (a module whose qualified name
            equals an entry or ends with ``"." + entry``), or one string used as a full-match regex.
        r: rank of LoRA's ``B A`` and of LoKr's second factor ``w2_a w2_b``.
        alpha: LoRA / LoKr scale numerator; the update is scaled by ``alpha / r``.
        dropout: dropout probability on the adapter's input path (0 disables it).
        a_shape: ``(a1, a2)`` of the first Kronecker factor (KronA ``A``, LoKr ``w1``);
            ``None`` picks factors near sqrt(d) (768 -> 24).
        b_shape: ``(b1, b2)`` of the second factor; ``a1 * b1 = d_out`` and ``a2 * b2 = d_in``.
        scale: KronA's fixed scale ``s`` of ``s * (A kron B)``.
        zero_factor: which KronA factor starts at zero (``"A"`` or ``"B"``); the other gets
            Kaiming-uniform values, so the adapted model starts equal to the base model.
        lr_ratio: lambda of the "+" methods: the learning-rate ratio of the lambda factor.
        lr_ratio_factor: KronA+ factor that gets ``lr_ratio``: ``"zero"`` (the zero-initialised
            one, like LoRA+'s ``B``), ``"A"`` or ``"B"``.
        replace_qkv: name of fused qkv Linear layers to split into q/k/v Linears first.
    """

    method: PeftMethod
    target_modules: tuple[str, ...] | str
    r: int = 8
    alpha: float = 8.0
    dropout: float = 0.0
    a_shape: tuple[int, int] | None = None
    b_shape: tuple[int, int] | None = None
    scale: float = 1.0
    zero_factor: Literal["A", "B"] = "A"
    lr_ratio: float = 16.0
    lr_ratio_factor: Literal["zero", "A", "B"] = "zero"
    replace_qkv: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", PeftMethod.parse(self.method))
        object.__setattr__(self, "target_modules", _check_targets(self.target_modules))
        _check_positive_int("r", self.r)
        _check_positive_float("alpha", self.alpha)
        _check_positive_float("lr_ratio", self.lr_ratio)
        if not isinstance(self.scale, int | float) or not math.isfinite(self.scale):
            raise TypeError(f"scale must be a finite number, got {self.scale!r}.")
        if self.scale == 0:
            raise ValueError("scale=0 switches the KronA update off; use a non-zero scale (1.0).")
        if not isinstance(self.dropout, int | float) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}.")
        for name in ("a_shape", "b_shape"):
            object.__setattr__(self, name, _check_shape(name, getattr(self, name)))
        if self.zero_factor not in ("A", "B"):
            raise ValueError(f"zero_factor must be 'A' or 'B', got {self.zero_factor!r}.")
        if self.lr_ratio_factor not in ("zero", "A", "B"):
            raise ValueError(
                f"lr_ratio_factor must be 'zero', 'A' or 'B', got {self.lr_ratio_factor!r}."
            )
        if self.replace_qkv is not None and (
            not isinstance(self.replace_qkv, str) or not self.replace_qkv
        ):
            raise TypeError(f"replace_qkv must be a module name or None, got {self.replace_qkv!r}.")

    @classmethod
    def from_peft_config(cls, peft_config: Mapping[str, Any]) -> AdapterConfig:
        """Build from TerraTorch's ``peft_config`` dict (``method``, ``replace_qkv``, kwargs).

        Raises:
            TypeError: unknown keys (the message lists the valid ones for the method).
            ValueError: an unknown method or an out-of-range value.
        """
        if not isinstance(peft_config, Mapping):
            raise TypeError(
                f"peft_config must be a dict with 'method' and 'peft_config_kwargs', got "
                f"{type(peft_config).__name__}."
            )
        unknown = sorted(set(peft_config) - set(_TOP_LEVEL_KEYS))
        if unknown:
            raise TypeError(f"Unknown peft_config keys {unknown}; valid: {list(_TOP_LEVEL_KEYS)}.")
        if "method" not in peft_config:
            raise ValueError(
                f"peft_config has no 'method'; add one of {', '.join(m.value for m in PeftMethod)}."
            )
        method = PeftMethod.parse(peft_config["method"])
        kwargs = peft_config.get("peft_config_kwargs") or {}
        if not isinstance(kwargs, Mapping):
            raise TypeError(
                f"peft_config_kwargs must be a mapping such as {{target_modules: [attn.q, "
                f"attn.v]}}, got {kwargs!r}."
            )
        kwargs = dict(kwargs)
        for alias, name in ALIASES.items():
            if alias in kwargs and name in VALID_KWARGS[method]:
                if name in kwargs:
                    raise TypeError(f"Give either {alias!r} or {name!r}, not both.")
                kwargs[name] = kwargs.pop(alias)
        valid = VALID_KWARGS[method]
        unknown = sorted(set(kwargs) - set(valid))
        if unknown:
            raise TypeError(
                f"peft_config_kwargs {unknown} are not valid for {method.value}; valid keys: "
                f"{list(valid)}."
            )
        if "target_modules" not in kwargs:
            raise ValueError(
                "peft_config_kwargs needs 'target_modules', the Linear layers to adapt, e.g. "
                "['attn.q', 'attn.v']."
            )
        return cls(method=method, replace_qkv=peft_config.get("replace_qkv"), **kwargs)

    def hyperparameters(self) -> dict[str, Any]:
        """The settings that shape the adapters of this method (saved in adapter files)."""
        values = asdict(self)
        keep = set(VALID_KWARGS[self.method]) - {"target_modules"}
        out = {name: values[name] for name in sorted(keep)}
        for name in ("a_shape", "b_shape"):
            if out.get(name) is not None:
                out[name] = list(out[name])
        return out

    def to_peft_config(self) -> dict[str, Any]:
        """The TerraTorch ``peft_config`` dict that rebuilds this configuration."""
        kwargs = self.hyperparameters()
        targets = self.target_modules
        kwargs["target_modules"] = targets if isinstance(targets, str) else list(targets)
        return {
            "method": self.method.value,
            "replace_qkv": self.replace_qkv,
            "peft_config_kwargs": kwargs,
        }


def _check_targets(targets: Any) -> tuple[str, ...] | str:
    if isinstance(targets, str):
        try:
            re.compile(targets)
        except re.error as err:
            raise ValueError(
                f"target_modules {targets!r} is a string, so it is used as a regex, but it does "
                f"not compile ({err}); fix the pattern or pass a list of names."
            ) from None
        return targets
    if (
        isinstance(targets, list | tuple)
        and targets
        and all(isinstance(t, str) and t for t in targets)
    ):
        return tuple(targets)
    raise TypeError(
        f"target_modules must be a non-empty list of module names (e.g. ['attn.q', 'attn.v']) "
        f"or one regex string, got {targets!r}."
    )


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive integer, got {value!r}.")
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value}.")


def _check_positive_float(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a positive number, got {value!r}.")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value}.")


def _check_shape(name: str, value: Any) -> tuple[int, int] | None:
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
