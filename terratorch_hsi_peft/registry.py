"""Registration of the plugin's components with TerraTorch's registries.

TerraTorch's ``Registry.register`` silently overwrites a name that already exists. The decorators
here register each component exactly once: importing (or reloading) a plugin module twice leaves
the first registration in place, and a clash with a component that is not the plugin's is an
error instead of a silent replacement.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from terratorch.registry import (
    MODEL_FACTORY_REGISTRY,
    TERRATORCH_BACKBONE_REGISTRY,
    TERRATORCH_FULL_MODEL_REGISTRY,
    Registry,
)

__all__ = ["PLUGIN_NAMES", "register_backbone", "register_full_model", "register_model_factory"]

T = TypeVar("T", bound=Callable)

#: What the plugin registered, by registry: ``{"backbone": [...], "model_factory": [...],
#: "full_model": [...]}``.
PLUGIN_NAMES: dict[str, list[str]] = {}


def _register_once(registry: Registry, kind: str) -> Callable[[T], T]:
    def decorator(component: T) -> T:
        name = component.__name__
        if name in registry:
            existing = registry[name]
            same = (existing.__module__, existing.__qualname__) == (
                component.__module__,
                component.__qualname__,
            )
            if not same:
                raise RuntimeError(
                    f"TerraTorch's {kind} registry already holds '{name}' from "
                    f"{existing.__module__}; terratorch_hsi_peft will not overwrite it. Uninstall "
                    "the package that registers the same name or import only one of them."
                )
        else:
            registry.register(component)
        names = PLUGIN_NAMES.setdefault(kind, [])
        if name not in names:
            names.append(name)
        return component

    return decorator


#: Registers a backbone factory in ``TERRATORCH_BACKBONE_REGISTRY``.
register_backbone = _register_once(TERRATORCH_BACKBONE_REGISTRY, "backbone")
#: Registers a model factory class in ``MODEL_FACTORY_REGISTRY``.
register_model_factory = _register_once(MODEL_FACTORY_REGISTRY, "model_factory")
#: Registers a whole-model builder in ``TERRATORCH_FULL_MODEL_REGISTRY`` (``FullModelFactory``).
register_full_model = _register_once(TERRATORCH_FULL_MODEL_REGISTRY, "full_model")
