"""The validated adapter configuration: method, targets and the method's options.

The configuration is the dictionary TerraTorch takes as ``model_args.peft_config``::

    {"method": "KRONA_PLUS", "replace_qkv": None,
     "peft_config_kwargs": {"target_modules": ["attn.q", "attn.v"], "a_shape": [24, 24]}}

:meth:`AdapterConfig.from_peft_config` turns it into an :class:`AdapterConfig` (and
:meth:`AdapterConfig.from_kwargs` does the same for a method already resolved, as the model
factory does), rejecting unknown keys and out-of-range values with messages that name the problem
and the fix. The keys each method takes come from its registration
(:mod:`terratorch_hsi_peft.peft.registry`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from terratorch_hsi_peft.peft.registry import (
    COMMON_KEYS,
    AdapterMethod,
    MethodOptions,
    get_method,
    method_names,
)

__all__ = ["AdapterConfig"]

#: Hugging Face peft spellings accepted so existing TerraTorch LoRA configs keep working.
ALIASES = {"lora_alpha": "alpha", "lora_dropout": "dropout", "loraplus_lr_ratio": "lr_ratio"}
#: ``backend`` may only say ``plugin``: the method files of configs/methods/ name it.
_TOP_LEVEL_KEYS = ("method", "backend", "replace_qkv", "peft_config_kwargs")


@dataclass(frozen=True)
class AdapterConfig:
    """Validated adapter settings, shared by every adapted layer of a model.

    Attributes:
        method: the registered adapter method.
        target_modules: module names matched like Hugging Face peft (a module whose qualified name
            equals an entry or ends with ``"." + entry``), or one string used as a full-match regex.
        options: the method's own settings (an instance of ``method.options``, checked).
        dropout: dropout probability on the adapter's input path (0 disables it).
        replace_qkv: name of fused qkv Linear layers to split into q/k/v Linears first.
    """

    method: AdapterMethod
    target_modules: tuple[str, ...] | str
    options: MethodOptions
    dropout: float = 0.0
    replace_qkv: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", get_method(self.method))
        if type(self.options) is not self.method.options:
            raise TypeError(
                f"options of a {self.method.name} adapter must be "
                f"{self.method.options.__name__}, got {type(self.options).__name__}."
            )
        object.__setattr__(self, "target_modules", _check_targets(self.target_modules))
        if (
            isinstance(self.dropout, bool)
            or not isinstance(self.dropout, int | float)
            or not 0.0 <= self.dropout < 1.0
        ):
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}.")
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
                f"peft_config has no 'method'; add one of {', '.join(method_names())}."
            )
        if peft_config.get("backend") not in (None, "plugin"):
            raise ValueError(
                f"peft_config backend={peft_config['backend']!r}: apply_peft puts the plugin's "
                "adapters on (backend: plugin or none). For Hugging Face peft's methods use "
                "peft.get_peft_model, or PEFTEncoderDecoderFactory with backend: hf."
            )
        return cls.from_kwargs(
            peft_config["method"],
            peft_config.get("peft_config_kwargs"),
            peft_config.get("replace_qkv"),
        )

    @classmethod
    def from_kwargs(
        cls,
        method: str | AdapterMethod,
        peft_config_kwargs: Mapping[str, Any] | None,
        replace_qkv: str | None = None,
    ) -> AdapterConfig:
        """Build from a method and its ``peft_config_kwargs`` (Hugging Face aliases accepted).

        Raises:
            TypeError: unknown keys (the message lists the valid ones for the method).
            ValueError: an unknown method, no ``target_modules`` or an out-of-range value.
        """
        method = get_method(method)
        kwargs = peft_config_kwargs or {}
        if not isinstance(kwargs, Mapping):
            raise TypeError(
                f"peft_config_kwargs must be a mapping such as {{target_modules: [attn.q, "
                f"attn.v]}}, got {kwargs!r}."
            )
        kwargs = dict(kwargs)
        valid = (*COMMON_KEYS, *method.options.option_names())
        for alias, name in ALIASES.items():
            if alias in kwargs and name in valid:
                if name in kwargs:
                    raise TypeError(f"Give either {alias!r} or {name!r}, not both.")
                kwargs[name] = kwargs.pop(alias)
        unknown = sorted(set(kwargs) - set(valid))
        if unknown:
            raise TypeError(
                f"peft_config_kwargs {unknown} are not valid for {method.name}; valid keys: "
                f"{list(valid)}."
            )
        if "target_modules" not in kwargs:
            raise ValueError(
                "peft_config_kwargs needs 'target_modules', the Linear layers to adapt, e.g. "
                "['attn.q', 'attn.v']."
            )
        common = {key: kwargs.pop(key) for key in COMMON_KEYS if key in kwargs}
        return cls(
            method=method, options=method.options(**kwargs), replace_qkv=replace_qkv, **common
        )

    def hyperparameters(self) -> dict[str, Any]:
        """The settings that shape the adapters of this method (saved in adapter files)."""
        values = {"dropout": self.dropout, **self.options.as_dict()}
        return {name: values[name] for name in sorted(values)}

    def to_peft_config(self) -> dict[str, Any]:
        """The TerraTorch ``peft_config`` dict that rebuilds this configuration."""
        kwargs = self.hyperparameters()
        targets = self.target_modules
        kwargs["target_modules"] = targets if isinstance(targets, str) else list(targets)
        return {
            "method": self.method.name,
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
