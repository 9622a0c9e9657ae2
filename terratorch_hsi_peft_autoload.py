"""Import ``terratorch_hsi_peft`` as soon as TerraTorch has finished importing.

TerraTorch scans no entry points: its registries know the plugin's backbones and model factory
only once ``terratorch_hsi_peft`` is imported. The wheel ships ``terratorch_hsi_peft_autoload.pth``
at the top of site-packages; Python runs it at start-up, and it calls :func:`install`, which puts
a tiny finder on ``sys.meta_path``. The finder does nothing until ``terratorch`` itself is
imported; once that module has executed completely it imports the plugin, so every TerraTorch
entry point (``terratorch fit/test/predict``, ``config_deploy.yaml``, ``load_from_checkpoint`` in a
script) finds ``spectralgpt_vit_*`` and ``PEFTEncoderDecoderFactory`` without a line of config.

- A process that never imports TerraTorch pays one dictionary look-up per import: this module
  imports nothing but ``os`` and ``sys``, and the plugin is never imported for it.
- The plugin is never imported while TerraTorch is half-imported (that is what makes TerraTorch's
  own ``./custom_modules`` convention fail with a circular import).
- ``TERRATORCH_HSI_PEFT_AUTOLOAD=0`` switches it off (read at start-up and again when TerraTorch
  is imported); then import ``terratorch_hsi_peft`` yourself or name one of its classes by
  ``class_path``.

This is a top-level module, not part of the package, because importing anything inside
``terratorch_hsi_peft`` imports TerraTorch.
"""

from __future__ import annotations

import os
import sys
import warnings

__all__ = ["ENV_VAR", "enabled", "install", "uninstall"]

#: Set to ``0`` (or ``false``, ``no``, ``off``) to keep TerraTorch from importing the plugin.
ENV_VAR = "TERRATORCH_HSI_PEFT_AUTOLOAD"
PLUGIN = "terratorch_hsi_peft"
TRIGGER = "terratorch"


def enabled() -> bool:
    """Whether :data:`ENV_VAR` allows the automatic import (unset means yes)."""
    return os.environ.get(ENV_VAR, "1").strip().lower() not in {"0", "false", "no", "off"}


class _LoaderThenPlugin:
    """Wraps TerraTorch's own loader: executes ``terratorch``, then imports the plugin."""

    def __init__(self, loader) -> None:
        self._loader = loader

    def __getattr__(self, name: str):  # everything else (get_resource_reader, ...) as the original
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        # One-shot, but only now: ``python -m terratorch`` looks the spec up before importing.
        uninstall()
        self._loader.exec_module(module)
        # The spec's loader is TerraTorch's own again (importlib.resources and reloads use it).
        module.__loader__ = module.__spec__.loader = self._loader
        if enabled() and PLUGIN not in sys.modules:
            _import_plugin()


def _import_plugin() -> None:
    try:
        __import__(PLUGIN)
    except Exception as error:  # an ``import terratorch`` must not fail because of the plugin
        sys.modules.pop(PLUGIN, None)
        warnings.warn(
            f"terratorch-hsi-peft could not be imported after TerraTorch ({type(error).__name__}: "
            f"{error}); its backbones and PEFTEncoderDecoderFactory are not registered. Import "
            f"{PLUGIN} yourself to see the full error, reinstall a version that matches your "
            f"TerraTorch, or set {ENV_VAR}=0 to stop this attempt.",
            RuntimeWarning,
            stacklevel=2,
        )


class AutoloadFinder:
    """``sys.meta_path`` entry that only reacts to the import of the ``terratorch`` package."""

    def find_spec(self, fullname: str, path=None, target=None):
        """For ``terratorch``: the spec the other finders give, with a loader that then imports
        the plugin; for every other name, None (let the other finders answer)."""
        if fullname != TRIGGER:
            return None
        for finder in sys.meta_path:
            if isinstance(finder, AutoloadFinder):
                continue
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(fullname, path, target) if find_spec is not None else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _LoaderThenPlugin(spec.loader)
                return spec
        return None


def install() -> None:
    """Put the finder on ``sys.meta_path`` (once, at start-up) unless :data:`ENV_VAR` is off."""
    if enabled() and not any(isinstance(f, AutoloadFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, AutoloadFinder())


def uninstall() -> None:
    """Remove the finder from ``sys.meta_path`` (TerraTorch then no longer imports the plugin)."""
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, AutoloadFinder)]
