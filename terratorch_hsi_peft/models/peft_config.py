"""The factory's ``peft_config``: TerraTorch's schema plus the plugin's keys, parsed once.

TerraTorch's ``model_args.peft_config`` is ``{method, replace_qkv, peft_config_kwargs}``. The
plugin adds three keys:

- ``backend``: ``"plugin"`` (the plugin's registered methods, see
  :mod:`terratorch_hsi_peft.peft.registry`; case-insensitive, ``+`` for ``_PLUS``) or ``"hf"``
  (Hugging Face ``peft`` through TerraTorch's own code path). Without it a name only one side
  knows goes to that side. A name both know is resolved as its plugin method declares
  (``hf_peft_name_clash``): ``"plugin"`` (``LORA``, ``LOKR``) means the plugin's, and the model
  build logs it and names ``backend: hf``; ``"require_backend"`` (a plugin method added after
  Hugging Face ``peft`` had the name) makes it an error naming both choices, so a config written
  for Hugging Face's method does not switch silently.
- ``adapter_path``: a ``.safetensors`` adapter file (as written by
  :class:`~terratorch_hsi_peft.callbacks.AdapterCheckpoint`) loaded into the built model.
- ``check_base``: ``true`` (default) checks that the model's base weights are the ones the
  ``adapter_path`` file was trained on (in any precision); ``false`` loads the adapters onto
  other base weights on purpose.

``peft_config`` may also be the path of a YAML file holding that mapping (a method file of
``configs/methods/``), as ``--model.init_args.model_args.peft_config configs/methods/lora.yaml``
gives it; the file is read at each build, relative to the working directory.

:meth:`PeftSpec.parse` checks all of it once, at the factory; for the plugin backend the result
holds the :class:`~terratorch_hsi_peft.peft.config.AdapterConfig` that injection uses as it is.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from terratorch_hsi_peft.peft.config import AdapterConfig
from terratorch_hsi_peft.peft.registry import (
    AdapterMethod,
    find_method,
    hf_peft_methods,
    method_names,
)
from terratorch_hsi_peft.utils.cli_values import cli_scalar

__all__ = ["BACKENDS", "PEFT_CONFIG_KEYS", "PeftSpec", "read_peft_config_file"]

BACKENDS = ("plugin", "hf")
#: Every key the factory's ``peft_config`` accepts.
PEFT_CONFIG_KEYS = (
    "method",
    "backend",
    "replace_qkv",
    "peft_config_kwargs",
    "adapter_path",
    "check_base",
)


@dataclass(frozen=True)
class PeftSpec:
    """A checked ``peft_config``.

    Attributes:
        backend: ``"plugin"`` or ``"hf"``.
        method: the method name as the backend spells it (upper case).
        adapter: the plugin backend's validated adapter configuration (None for ``hf``).
        hf_peft_config: the ``hf`` backend's ``{method, replace_qkv, peft_config_kwargs}`` for
            TerraTorch's own peft code (None for ``plugin``).
        adapter_path: adapter file to load after building, or None.
        check_base: whether loading ``adapter_path`` checks the base weights.
        backend_note: for a name both backends know, which one was used and how to pick the
            other (the factory logs it); None otherwise.
    """

    backend: Literal["plugin", "hf"]
    method: str
    adapter: AdapterConfig | None
    hf_peft_config: dict[str, Any] | None
    adapter_path: Path | None
    backend_note: str | None = None
    check_base: bool = True

    @classmethod
    def parse(cls, peft_config: Mapping[str, Any] | str | os.PathLike) -> PeftSpec:
        """Check ``peft_config`` (or the YAML file it names); raise FileNotFoundError,
        TypeError or ValueError naming the problem and the fix."""
        if isinstance(peft_config, str | os.PathLike):
            peft_config = read_peft_config_file(peft_config)
        if not isinstance(peft_config, Mapping):
            raise TypeError(
                "peft_config must be a mapping such as {method: KRONA_PLUS, peft_config_kwargs: "
                f"{{target_modules: [attn.q, attn.v]}}}} or the path of a YAML file holding one "
                f"(configs/methods/krona_plus.yaml), got {type(peft_config).__name__}."
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
                f"{method_names()} or a Hugging Face peft method with backend: hf."
            )
        backend = peft_config.get("backend")
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"peft_config backend={backend!r} is not one of {list(BACKENDS)}.")
        method = peft_config["method"]
        if not isinstance(method, str):
            raise TypeError(f"peft_config method must be a string, got {method!r}.")
        backend, plugin_method, note = _resolve_backend(method, backend)
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
        # cli_scalar: a value given on the command line can arrive as the string "false".
        check_base = cli_scalar(peft_config.get("check_base", True))
        if not isinstance(check_base, bool):
            raise TypeError(
                f"peft_config check_base must be true or false, got {check_base!r}; false loads "
                "adapter_path onto other base weights on purpose."
            )
        if not check_base and adapter_path is None:
            raise ValueError(
                "peft_config check_base: false only applies to an adapter_path; set adapter_path "
                "or drop check_base."
            )
        replace_qkv = peft_config.get("replace_qkv")
        if plugin_method is not None:
            adapter = AdapterConfig.from_kwargs(plugin_method, kwargs, replace_qkv)
            return cls("plugin", plugin_method.name, adapter, None, adapter_path, note, check_base)
        hf_config = {
            "method": method.upper(),
            "replace_qkv": replace_qkv,
            "peft_config_kwargs": dict(kwargs),
        }
        return cls("hf", method.upper(), None, hf_config, adapter_path, note, check_base)

    def resolved_peft_config(self) -> dict[str, Any]:
        """``backend`` plus the backend's ``{method, replace_qkv, peft_config_kwargs}`` (the
        plugin's with every default filled in)."""
        config = self.adapter.to_peft_config() if self.adapter else dict(self.hf_peft_config)
        return {"backend": self.backend, **config}


def read_peft_config_file(path: str | os.PathLike) -> Mapping[str, Any]:
    """The ``peft_config`` mapping held by the YAML file ``path`` (a method file).

    Raises:
        FileNotFoundError: no such file; the message names the working directory it was
            looked up from and the shipped method files.
        TypeError: the file does not hold a mapping.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(
            f"peft_config {str(path)!r} is not a file (looked up from {os.getcwd()}). Give the "
            "path of a method file, such as configs/methods/krona_plus.yaml of the repository "
            "(relative to the folder terratorch runs in), or the mapping itself: "
            "{method: KRONA_PLUS, peft_config_kwargs: {target_modules: [attn.q, attn.v]}}."
        )
    content = yaml.safe_load(file.read_text())
    if not isinstance(content, Mapping):
        raise TypeError(
            f"peft_config file {str(path)!r} holds {type(content).__name__}, not a mapping such "
            "as {method: KRONA_PLUS, peft_config_kwargs: {target_modules: [attn.q, attn.v]}} "
            "(the contents of a configs/methods/ file)."
        )
    if "model" in content or "trainer" in content:
        raise TypeError(
            f"peft_config file {str(path)!r} is a whole TerraTorch config (it has model or "
            "trainer); give it with --config instead, or give a method file such as "
            "configs/methods/krona_plus.yaml here."
        )
    return content


def _resolve_backend(
    method: str, backend: str | None
) -> tuple[Literal["plugin", "hf"], AdapterMethod | None, str | None]:
    """The backend, the plugin method (None for ``hf``) and a note for a name both know."""
    plugin, hf_methods = find_method(method), hf_peft_methods()
    in_hf = method.upper() in hf_methods
    if backend == "plugin":
        if plugin is None:
            hint = ", or backend: hf for Hugging Face peft's." if in_hf else "."
            raise ValueError(
                f"{method!r} is not a plugin method (backend: plugin); use one of "
                f"{method_names()}{hint}"
            )
        return "plugin", plugin, None
    if backend == "hf":
        if not in_hf:
            raise ValueError(
                f"{method!r} is not a Hugging Face peft method (backend: hf); use one of "
                f"{sorted(hf_methods)}."
            )
        return "hf", None, None
    if plugin is not None and in_hf:
        if plugin.hf_peft_name_clash == "require_backend":
            raise ValueError(
                f"peft_config method {method!r} names two methods: the plugin's {plugin.name} "
                f"({plugin.layer.__name__}) and Hugging Face peft's {method.upper()}. Add "
                "backend: plugin or backend: hf to pick one."
            )
        return (
            "plugin",
            plugin,
            f"peft_config method {method!r}: using the plugin's {plugin.name}; add backend: hf "
            f"for Hugging Face peft's {method.upper()}.",
        )
    if plugin is not None:
        return "plugin", plugin, None
    if in_hf:
        return "hf", None, None
    raise ValueError(
        f"Unknown PEFT method {method!r}. Plugin methods: {method_names()}; "
        f"Hugging Face peft methods (backend: hf): {sorted(hf_methods)}."
    )
