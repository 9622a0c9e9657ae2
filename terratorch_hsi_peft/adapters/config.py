"""``peft_config``, parsed once: method, backend, targets, the method's options, adapter file.

The configuration is the dictionary TerraTorch takes as ``model_args.peft_config``::

    {"method": "KRONA_PLUS", "replace_qkv": None,
     "peft_config_kwargs": {"target_modules": ["attn.q", "attn.v"], "a_shape": [24, 24]}}

The plugin adds three keys to TerraTorch's ``{method, replace_qkv, peft_config_kwargs}``:

- ``backend``: ``"plugin"`` (the plugin's registered methods, see
  :mod:`terratorch_hsi_peft.adapters.registry`; case-insensitive, ``+`` for ``_PLUS``) or ``"hf"``
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

:meth:`PeftSpec.parse` is the one parser of it, for both routes: the model factory
(:class:`~terratorch_hsi_peft.models.PEFTEncoderDecoderFactory`) and the module-level
:func:`~terratorch_hsi_peft.adapters.apply_peft` (through :meth:`AdapterConfig.from_peft_config`,
which takes the plugin backend when none is given and refuses what only a model build does:
``backend: hf`` and ``adapter_path``). For the plugin backend the spec holds the
:class:`AdapterConfig` that injection uses as it is; unknown keys and out-of-range values are
errors naming the problem and the fix. The keys each method takes come from its registration.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from terratorch_hsi_peft.adapters.registry import (
    COMMON_KEYS,
    AdapterMethod,
    MethodOptions,
    find_method,
    get_method,
    hf_peft_methods,
    method_names,
)

__all__ = ["BACKENDS", "PEFT_CONFIG_KEYS", "AdapterConfig", "PeftSpec", "read_peft_config_file"]

#: Hugging Face peft spellings accepted so existing TerraTorch LoRA configs keep working.
ALIASES = {"lora_alpha": "alpha", "lora_dropout": "dropout", "loraplus_lr_ratio": "lr_ratio"}
BACKENDS = ("plugin", "hf")
#: Every key ``peft_config`` accepts (docs/configuration.md lists them in this order).
PEFT_CONFIG_KEYS = (
    "method",
    "backend",
    "replace_qkv",
    "peft_config_kwargs",
    "adapter_path",
    "check_base",
)


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
    def from_peft_config(cls, peft_config: Mapping[str, Any] | str | os.PathLike) -> AdapterConfig:
        """Parse TerraTorch's ``peft_config`` (or the YAML file it names) for the plugin's methods.

        The parser is :meth:`PeftSpec.parse`, the model factory's, with ``backend: plugin`` when
        none is given (a module gets only the plugin's adapters).

        Raises:
            TypeError: unknown keys (the message lists the valid ones).
            ValueError: an unknown method, an out-of-range value, ``backend: hf`` or an
                ``adapter_path`` (once the adapters are on,
                :func:`~terratorch_hsi_peft.adapters.load_adapters` loads a file).
        """
        spec = PeftSpec.parse(peft_config, default_backend="plugin")
        if spec.adapter is None:
            raise ValueError(
                "peft_config backend='hf': apply_peft puts the plugin's adapters on (backend: "
                "plugin or none). For Hugging Face peft's methods use peft.get_peft_model, or "
                "PEFTEncoderDecoderFactory with backend: hf."
            )
        if spec.adapter_path is not None:
            raise ValueError(
                f"peft_config adapter_path {str(spec.adapter_path)!r}: apply_peft puts fresh "
                "adapters on a module; drop adapter_path and call load_adapters(module, path) "
                "afterwards, or build the model with PEFTEncoderDecoderFactory."
            )
        return spec.adapter

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
        kwargs = dict(_checked_kwargs(peft_config_kwargs))
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
    def parse(
        cls,
        peft_config: Mapping[str, Any] | str | os.PathLike,
        default_backend: Literal["plugin", "hf"] | None = None,
    ) -> PeftSpec:
        """Check ``peft_config`` (or the YAML file it names) once, for every route.

        Args:
            peft_config: the mapping of :data:`PEFT_CONFIG_KEYS`, or the path of a YAML file
                holding it.
            default_backend: the backend when ``peft_config`` names none (None: resolved from
                the method name, as the model factory does).

        Raises:
            FileNotFoundError, TypeError, ValueError: naming the problem and the fix.
        """
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
        backend = peft_config.get("backend", default_backend)
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"peft_config backend={backend!r} is not one of {list(BACKENDS)}.")
        method = peft_config["method"]
        if not isinstance(method, str):
            raise TypeError(f"peft_config method must be a string, got {method!r}.")
        backend, plugin_method, note = _resolve_backend(method, backend)
        kwargs = _checked_kwargs(peft_config.get("peft_config_kwargs"))
        adapter_path = peft_config.get("adapter_path")
        if adapter_path is not None:
            adapter_path = Path(adapter_path)
            if not adapter_path.is_file():
                raise ValueError(
                    f"peft_config adapter_path {str(adapter_path)!r} is not a file; give the "
                    "adapters.safetensors a training run wrote, or drop adapter_path."
                )
        check_base = peft_config.get("check_base", True)
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


def _checked_kwargs(kwargs: Any) -> Mapping[str, Any]:
    """``peft_config_kwargs`` as a mapping (None: empty)."""
    if kwargs is None:
        return {}
    if not isinstance(kwargs, Mapping):
        raise TypeError(
            f"peft_config_kwargs must be a mapping such as {{target_modules: [attn.q, "
            f"attn.v]}}, got {kwargs!r}."
        )
    return kwargs


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
