"""The factory's ``peft_config``: TerraTorch's schema plus the plugin's keys, checked up front.

TerraTorch's ``model_args.peft_config`` is ``{method, replace_qkv, peft_config_kwargs}``. The
plugin adds two keys:

- ``backend``: ``"plugin"`` (the plugin's adapters; default for its method names ``LORA``,
  ``LORA_PLUS``, ``KRONA``, ``KRONA_PLUS``, ``LOKR``, case-insensitive, ``+`` for ``_PLUS``) or
  ``"hf"`` (Hugging Face ``peft`` through TerraTorch's own code path; default for every other
  ``peft`` method name, e.g. ``IA3``, ``LOHA``). ``LORA`` and ``LOKR`` exist in both: they mean
  the plugin's unless ``backend: hf`` is given.
- ``adapter_path``: a ``.safetensors`` adapter file (as written by
  :class:`~terratorch_hsi_peft.callbacks.AdapterCheckpoint`) loaded into the built model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from terratorch_hsi_peft.peft.config import PeftMethod

__all__ = ["BACKENDS", "PEFT_CONFIG_KEYS", "PeftSpec"]

BACKENDS = ("plugin", "hf")
#: Every key the factory's ``peft_config`` accepts.
PEFT_CONFIG_KEYS = ("method", "backend", "replace_qkv", "peft_config_kwargs", "adapter_path")


@dataclass(frozen=True)
class PeftSpec:
    """A checked ``peft_config``.

    Attributes:
        backend: ``"plugin"`` or ``"hf"``.
        method: the method name as the backend spells it (upper case).
        replace_qkv: name of fused qkv Linears to split before adapting, or None.
        peft_config_kwargs: keyword arguments of the backend's adapter configuration.
        adapter_path: adapter file to load after building, or None.
    """

    backend: Literal["plugin", "hf"]
    method: str
    replace_qkv: str | None
    peft_config_kwargs: dict[str, Any]
    adapter_path: Path | None

    @classmethod
    def parse(cls, peft_config: Mapping[str, Any]) -> PeftSpec:
        """Check ``peft_config``; raise TypeError/ValueError naming the problem and the fix."""
        if not isinstance(peft_config, Mapping):
            raise TypeError(
                "peft_config must be a mapping such as {method: KRONA_PLUS, peft_config_kwargs: "
                f"{{target_modules: [attn.q, attn.v]}}}}, got {type(peft_config).__name__}."
            )
        unknown = sorted(set(peft_config) - set(PEFT_CONFIG_KEYS))
        dotted = [key for key in unknown if "." in key]
        if dotted:  # what jsonargparse makes of a dotted override below an untyped dict's key
            raise TypeError(
                f"peft_config holds the key(s) {dotted}: a dotted command-line override below "
                "peft_config (such as --model.init_args.model_args.peft_config.peft_config_kwargs"
                ".r 4) replaces the whole peft_config with that one key. Give peft_config "
                "complete instead: --model.init_args.model_args.peft_config '{method: KRONA, "
                "peft_config_kwargs: {target_modules: [attn.q, attn.v]}}'."
            )
        if unknown:
            raise TypeError(
                f"Unknown peft_config key(s) {unknown}; valid keys: {list(PEFT_CONFIG_KEYS)}."
            )
        if "method" not in peft_config:
            raise ValueError(
                "peft_config has no 'method'; set it to one of the plugin's methods "
                f"{[m.value for m in PeftMethod]} or a Hugging Face peft method with backend: hf."
            )
        backend = peft_config.get("backend")
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"peft_config backend={backend!r} is not one of {list(BACKENDS)}.")
        method = peft_config["method"]
        if not isinstance(method, str):
            raise TypeError(f"peft_config method must be a string, got {method!r}.")
        backend, method = _resolve_method(method, backend)
        kwargs = peft_config.get("peft_config_kwargs") or {}
        if not isinstance(kwargs, Mapping):
            raise TypeError(f"peft_config_kwargs must be a mapping, got {kwargs!r}.")
        adapter_path = peft_config.get("adapter_path")
        if adapter_path is not None:
            adapter_path = Path(adapter_path)
            if not adapter_path.is_file():
                raise ValueError(
                    f"peft_config adapter_path {str(adapter_path)!r} is not a file; give the "
                    "adapters.safetensors a training run wrote, or drop adapter_path."
                )
        return cls(backend, method, peft_config.get("replace_qkv"), dict(kwargs), adapter_path)

    def terratorch_peft_config(self) -> dict[str, Any]:
        """The ``{method, replace_qkv, peft_config_kwargs}`` dict the backend consumes."""
        return {
            "method": self.method,
            "replace_qkv": self.replace_qkv,
            "peft_config_kwargs": dict(self.peft_config_kwargs),
        }


def _resolve_method(method: str, backend: str | None) -> tuple[Literal["plugin", "hf"], str]:
    if backend != "hf":
        try:
            return "plugin", PeftMethod.parse(method).value
        except ValueError:
            if backend == "plugin":
                raise
    hf_methods = _hf_methods()
    if method.upper() in hf_methods:
        return "hf", method.upper()
    raise ValueError(
        f"Unknown PEFT method {method!r}. Plugin methods: {[m.value for m in PeftMethod]}; "
        f"Hugging Face peft methods (backend: hf): {sorted(hf_methods)}."
    )


def _hf_methods() -> set[str]:
    try:
        from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
    except ModuleNotFoundError:  # peft is optional: only the hf backend needs it
        return set()
    return {str(getattr(name, "value", name)) for name in PEFT_TYPE_TO_CONFIG_MAPPING}
