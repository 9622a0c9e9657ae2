"""Find a scene class by name and load it: the entry point for datamodules and configs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from terratorch_hsi_peft.datasets.base import HyperspectralScene
from terratorch_hsi_peft.datasets.botswana import Botswana
from terratorch_hsi_peft.datasets.generic import GenericScene
from terratorch_hsi_peft.datasets.indian_pines import IndianPines
from terratorch_hsi_peft.datasets.ksc import KennedySpaceCenter
from terratorch_hsi_peft.datasets.pavia_centre import PaviaCentre
from terratorch_hsi_peft.datasets.pavia_university import PaviaUniversity
from terratorch_hsi_peft.datasets.product import ProductScene
from terratorch_hsi_peft.datasets.salinas import Salinas
from terratorch_hsi_peft.datasets.salinas_a import SalinasA

__all__ = ["SCENES", "load_scene"]

#: The benchmark scenes by name.
SCENES: dict[str, type[HyperspectralScene]] = {
    cls.NAME: cls
    for cls in (
        IndianPines,
        PaviaUniversity,
        PaviaCentre,
        Salinas,
        SalinasA,
        KennedySpaceCenter,
        Botswana,
    )
}

_GENERIC = "generic"
_PRODUCT = "product"


def _resolve(name_or_class: str | type[HyperspectralScene]) -> type[HyperspectralScene]:
    if isinstance(name_or_class, type) and issubclass(name_or_class, HyperspectralScene):
        return name_or_class
    if not isinstance(name_or_class, str):
        raise TypeError(
            f"Scene must be a name or a HyperspectralScene subclass, got {name_or_class!r}."
        )
    key = name_or_class.strip().lower().replace("-", "_").replace(" ", "_")
    by_class_name = {cls.__name__.lower(): cls for cls in (*SCENES.values(), GenericScene)}
    if key == _GENERIC:
        return GenericScene
    if key == _PRODUCT:
        return ProductScene
    if key in SCENES:
        return SCENES[key]
    if key.replace("_", "") in by_class_name:
        return by_class_name[key.replace("_", "")]
    raise ValueError(
        f"Unknown scene {name_or_class!r}. Choose one of {[*SCENES, _GENERIC, _PRODUCT]} (or a "
        "class name such as 'IndianPines'), or load your own files with scene 'generic' and "
        "image_path=..., or a sensor product with scene 'product' and path=..."
    )


def load_scene(
    name_or_class: str | type[HyperspectralScene],
    root: str | os.PathLike,
    download: bool = False,
    **kwargs: Any,
) -> HyperspectralScene:
    """Load a scene by name (``"indian_pines"``, ``"IndianPines"``, ``"generic"``...) or class.

    Args:
        name_or_class: a key of :data:`SCENES`, a scene class name, ``"generic"``, or a class.
        root: for a benchmark scene, the folder holding (or receiving) its files; for
            ``"generic"``, the folder that relative ``image_path``/``label_path`` are taken from.
            A leading ``~`` is expanded (configs default to ``~/data/hsi/<scene>``).
        download: fetch missing benchmark files (not available for ``"generic"``).
        **kwargs: passed to the class: ``checksum`` for benchmark scenes; ``image_path``
            (required), ``label_path``, ``image_key``, ``label_key``, ``wavelengths``,
            ``class_names``, ``name``, ``gsd`` for ``"generic"``; ``path`` (required),
            ``labels``, ``format``, ``label_attribute``, ``class_names``, ``drop_bad_bands``,
            ``name`` for ``"product"`` (:class:`~terratorch_hsi_peft.datasets.ProductScene`).

    Raises:
        ValueError: unknown scene, or ``download=True`` for a generic scene.
        TypeError: a missing or unexpected keyword for the scene class.
    """
    cls = _resolve(name_or_class)
    root = Path(root).expanduser()
    if issubclass(cls, GenericScene):
        if download:
            raise ValueError(
                "A generic scene has no download address: place its files under root yourself "
                "and pass download=False."
            )
        if "image_path" not in kwargs:
            raise TypeError("A generic scene needs image_path=... (relative to root, or absolute).")
        for key in ("image_path", "label_path"):
            if kwargs.get(key) is not None:
                kwargs[key] = Path(root) / kwargs[key]
        return cls(**kwargs)
    if issubclass(cls, ProductScene):
        if download:
            raise ValueError("A product scene has no download address: pass download=False.")
        if "path" not in kwargs:
            raise TypeError("A product scene needs path=... (relative to root, or absolute).")
        for key in ("path", "labels"):
            if kwargs.get(key) is not None:
                kwargs[key] = root / kwargs[key]
        return cls(**kwargs)
    unexpected = sorted(set(kwargs) - {"checksum"})
    if unexpected:
        raise TypeError(
            f"{cls.__name__} does not take {unexpected}; it takes root, download and checksum."
        )
    return cls(root, download=download, **kwargs)
