"""A scene named in a config, loaded once when first used: what every datamodule starts from."""

from __future__ import annotations

from typing import Any

from terratorch_hsi_peft.datasets import HyperspectralScene, load_scene

__all__ = ["SceneLoader"]


class SceneLoader:
    """Loads a configured scene on first use and keeps it (its cube is read once).

    Args:
        scene: a benchmark scene name (``indian_pines``, ...), ``generic``, or a loaded scene.
        root: folder of the scene's files (relative ``image_path`` of ``generic`` included);
            required for a name.
        download: fetch missing benchmark files.
        scene_options: more loader arguments (``checksum``; ``image_path``, ``image_key``, ...
            for ``generic``).

    Raises:
        ValueError: a scene name without ``root``.
    """

    def __init__(
        self,
        scene: str | HyperspectralScene,
        root: str | None = None,
        download: bool = False,
        scene_options: dict[str, Any] | None = None,
    ) -> None:
        if isinstance(scene, str) and root is None:
            raise ValueError(
                f"scene={scene!r} needs root: the folder holding (or receiving, with "
                "download: true) the scene's files."
            )
        self.spec = scene
        self.root = root
        self.download = download
        self.scene_options = dict(scene_options or {})
        self._scene = scene if isinstance(scene, HyperspectralScene) else None

    @property
    def scene(self) -> HyperspectralScene:
        """The loaded scene (read once)."""
        if self._scene is None:
            self._scene = load_scene(
                self.spec, self.root, download=self.download, **self.scene_options
            )
        return self._scene
