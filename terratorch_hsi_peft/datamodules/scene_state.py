"""One scene's state: its split, its band route and what a checkpoint keeps of them.

Every datamodule that trains on a scene holds one :class:`SceneState` (the pre-training
datamodule one per scene): the split is drawn (or loaded) and the band route fitted on its
training pixels the same way everywhere, so a fine-tuning run and the pre-training run before it
feed the encoder the same bands. Both are resolved lazily, when first used, because Lightning
restores a checkpoint's datamodule state only after ``setup()``: state restored by
:meth:`SceneState.load_state_dict` therefore always wins over a fresh fit.
"""

from __future__ import annotations

import inspect
import json
import logging
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from terratorch_hsi_peft.datamodules.source import SceneLoader
from terratorch_hsi_peft.datamodules.windows import pixel_major
from terratorch_hsi_peft.datasets import PROTOCOLS, HyperspectralScene, Split, make_split
from terratorch_hsi_peft.transforms import BandRoute, BandRouteName, MissingBandPolicy

__all__ = ["VALIDATION_SHARE", "RouteOptions", "SceneState", "split_parameters"]

logger = logging.getLogger(__name__)

_SETS = ("train", "val", "test")

#: The validation share a split gets unless its config names one: per class, this share of the
#: training pixels; spatially disjoint, validation blocks holding about this share of the
#: training side. Without one every fit would run an empty validation loop (Lightning warns);
#: ``val_size: 0`` / ``val_fraction: 0`` still turn it off.
VALIDATION_SHARE = {"per_class": {"val_size": 0.1}, "spatially_disjoint": {"val_fraction": 0.1}}


def split_parameters(
    config: Mapping[str, Any], extra: Mapping[str, Any] | None = None
) -> tuple[str, int, dict[str, Any]]:
    """``(protocol, seed, parameters)`` of a ``split`` config, with the datamodules' defaults.

    Args:
        config: the ``split`` mapping (``protocol``, default ``per_class``; ``seed``, default 0;
            the protocol's parameters).
        extra: defaults a datamodule adds for the protocol (e.g. the patch datamodule's
            ``patch_size``); the config's own values win over them, they win over
            :data:`VALIDATION_SHARE`.
    """
    params = dict(config)
    protocol = params.pop("protocol", "per_class")
    seed = params.pop("seed", 0)
    return protocol, seed, {**VALIDATION_SHARE.get(protocol, {}), **(extra or {}), **params}


@dataclass(frozen=True)
class RouteOptions:
    """How a band route is fitted (the datamodules' ``band_route`` arguments)."""

    band_route: BandRouteName = "pca"
    num_components: int = 12
    pca_whiten: bool = True
    missing_bands: MissingBandPolicy = "zero"
    min_coverage: float = 0.25
    append_spectra: bool = False

    def fit(self, pixels: np.ndarray, wavelengths: np.ndarray | None) -> BandRoute:
        """The route fitted on ``pixels`` (N, C), never on validation or test pixels."""
        return BandRoute.fit(
            self.band_route,
            pixels,
            num_components=self.num_components,
            whiten=self.pca_whiten,
            wavelengths=wavelengths,
            missing_bands=self.missing_bands,
            min_coverage=self.min_coverage,
            append_spectra=self.append_spectra,
        )


class SceneState:
    """A scene's split and fitted band route, built once and saved in checkpoints.

    Args:
        loader: the configured scene.
        split: the ``split`` config (``protocol``, ``seed`` and its parameters), or ``None``
            for no split (only where the owner allows one, see :meth:`draw_split`).
        split_file: a split saved with ``Split.save`` instead of ``split``.
        route: how the band route is fitted.
        wavelengths: band centres in nm overriding the scene's: a list, or ``{start: nm, stop:
            nm}`` for evenly spaced bands.
        owner: the datamodule's name, for messages.
        split_defaults: parameters the owner fills in for a protocol (see
            :func:`split_parameters`).

    Raises:
        ValueError: both ``split`` and ``split_file``.
    """

    def __init__(
        self,
        loader: SceneLoader,
        split: Mapping[str, Any] | None,
        split_file: str | None,
        route: RouteOptions,
        wavelengths: list[float] | Mapping[str, float] | None = None,
        owner: str = "datamodule",
        split_defaults: Callable[[str], dict[str, Any]] | None = None,
    ) -> None:
        if split is not None and split_file is not None:
            raise ValueError(
                f"{owner}: give either split (to draw one) or split_file (to load one), not both."
            )
        self.loader = loader
        self.split_config = None if split is None else dict(split)
        self.split_file = split_file
        self.route_options = route
        self.wavelength_spec = wavelengths
        self.owner = owner
        self.split_defaults = split_defaults or (lambda protocol: {})
        self.checkpoint_class_names: list[str] | None = None
        self._split: Split | None = None
        self._route: BandRoute | None = None
        self._cube: torch.Tensor | None = None

    @property
    def scene(self) -> HyperspectralScene:
        """The loaded scene (read once)."""
        return self.loader.scene

    def wavelengths(self) -> np.ndarray | None:
        """Band centres in nm: the configured ones, else the scene's."""
        spec = self.wavelength_spec
        if isinstance(spec, Mapping):
            if set(spec) != {"start", "stop"}:
                raise ValueError(
                    f"wavelengths of {self.scene.name!r} as a mapping takes exactly start and "
                    f"stop (nm of the first and last band), got {sorted(spec)}."
                )
            return np.linspace(float(spec["start"]), float(spec["stop"]), self.scene.num_bands)
        if spec is not None:
            return np.asarray(spec, dtype=np.float64)
        return self.scene.wavelengths

    # -- split --------------------------------------------------------------------------------

    def configured_parameters(self) -> tuple[str, int, dict[str, Any]]:
        """``(protocol, seed, parameters)`` of the configured ``split``, defaults filled in."""
        config = self.split_config or {}
        protocol = config.get("protocol", "per_class")
        return split_parameters(config, self.split_defaults(protocol))

    def draw_split(self) -> Split | None:
        """The configured split, loaded or drawn, validated against the labels; ``None``
        without ``split`` and ``split_file``."""
        if self.split_config is None and self.split_file is None:
            return None
        labels = self.scene.labels
        if labels is None:
            raise ValueError(f"Scene {self.scene.name!r} has no labels and so no split.")
        if self.split_file is not None:
            split = Split.load(self.split_file)
        else:
            protocol, seed, params = self.configured_parameters()
            split = make_split(labels, protocol, seed, **params)
        split.validate(labels)
        return split

    @property
    def split(self) -> Split | None:
        """The split: restored from a checkpoint, else loaded, else drawn (built once)."""
        if self._split is None:
            self._split = self.draw_split()
        return self._split

    # -- band route -----------------------------------------------------------------------------

    def fit_route(self, pixels: np.ndarray) -> BandRoute:
        """Fit the band route on the flat pixel indices ``pixels`` and keep it."""
        spectra = self.scene.image.reshape(-1, self.scene.num_bands)[pixels]
        self._route = self.route_options.fit(spectra, self.wavelengths())
        self._cube = None
        logger.info(
            "%s: %r band route fitted on %d pixels of %r: %d -> %d bands.",
            self.owner,
            self.route_options.band_route,
            len(pixels),
            self.scene.name,
            self._route.num_bands_in,
            self._route.num_bands_out,
        )
        return self._route

    @property
    def route(self) -> BandRoute:
        """The band route: restored from a checkpoint, else fitted on the training pixels."""
        if self._route is None:
            if not self.scene.has_labels:
                raise ValueError(
                    f"Scene {self.scene.name!r} has no labels, so the "
                    f"{self.route_options.band_route!r} band route cannot be fitted on its "
                    "training pixels. Predict it with the checkpoint of a run trained with this "
                    "datamodule (--ckpt_path): its band route is restored from there."
                )
            self.fit_route(self.split.train)
        return self._route

    @property
    def fitted_route(self) -> BandRoute | None:
        """The route if one is fitted or restored, else ``None`` (nothing is fitted)."""
        return self._route

    def restore_route(self, route: BandRoute) -> None:
        """Take a checkpoint's route: it wins over a refit."""
        self._route = route
        self._cube = None

    def routed_cube(self) -> torch.Tensor:
        """The whole scene through the band route: one (k, H, W) float32 tensor, built once.

        Laid out pixel-major in memory (:func:`~.windows.pixel_major`) for fast window gathers.
        """
        if self._cube is None:
            cube = torch.from_numpy(self.scene.image).permute(2, 0, 1)
            self._cube = pixel_major(self.route(cube))
        return self._cube

    # -- checkpoint state -----------------------------------------------------------------------

    @property
    def resolved(self) -> bool:
        """Whether a split or a band route exists yet (else there is no state to save)."""
        return self._split is not None or self._route is not None

    def state_dict(self, class_names: list[str]) -> dict[str, Any]:
        """The fitted band route, the class names and the split (nothing before either exists).

        Keys: ``band_route``, ``class_names`` (JSON) and, for a labelled scene, ``split``.
        """
        if not self.resolved:
            return {}
        state: dict[str, Any] = {
            "band_route": self.route.state_dict(),
            "class_names": json.dumps(class_names),
        }
        if self.scene.has_labels:
            split = self.split
            state["split"] = {
                **{name: torch.from_numpy(getattr(split, name)) for name in _SETS},
                "protocol": split.protocol,
                "seed": int(split.seed),
                "params": json.dumps(split.params, default=str),
                "shape": list(split.shape or self.scene.shape),
            }
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the band route, the class names and, for the same scene size, the split.

        What the checkpoint replaces of the configuration is said in a warning.

        Raises:
            ValueError: the state is not one :meth:`state_dict` writes (damaged or foreign).
        """
        if not state_dict:
            return
        try:
            route = BandRoute.from_state_dict(state_dict["band_route"])
            # Absent from checkpoints of earlier versions.
            names = json.loads(state_dict.get("class_names", "null"))
            if names is not None and not (
                isinstance(names, list) and all(isinstance(n, str) for n in names)
            ):
                raise TypeError(f"class_names {names!r} is not a list of names")
            saved = state_dict.get("split")
            restored = None
            if saved is not None:
                restored = Split(
                    **{name: saved[name].numpy().astype(np.int64) for name in _SETS},
                    protocol=saved["protocol"],
                    seed=int(saved["seed"]),
                    params=json.loads(saved["params"]),
                    shape=tuple(int(v) for v in saved["shape"]),
                )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ValueError(
                f"The checkpoint's {self.owner} state is damaged or was not written by this "
                f"datamodule ({type(err).__name__}: {err}); use a checkpoint of a run trained "
                "with it."
            ) from err
        self._warn_if_route_replaced(route)
        self.restore_route(route)
        scene = self.scene
        if names is not None:
            self.checkpoint_class_names = names
            if scene.class_names and names != scene.class_names:
                warnings.warn(
                    f"The checkpoint was trained on classes {names}, the scene {scene.name!r} "
                    f"has {scene.class_names}; maps and metrics use the scene's names. Check "
                    "that each class index means the same in both.",
                    UserWarning,
                    stacklevel=3,
                )
        if restored is None or not scene.has_labels:
            return
        if restored.shape != scene.shape:
            logger.info("Checkpoint split is for another scene size; the configured one is used.")
            return
        restored.validate(scene.labels)
        self._warn_if_split_replaced(restored)
        self._split = restored

    def _warn_if_route_replaced(self, route: BandRoute) -> None:
        options = self.route_options
        pca = options.band_route == "pca"
        configured = (
            options.band_route,
            options.num_components if pca else None,
            options.append_spectra,
        )
        saved = (route.route, route.num_routed if route.route == "pca" else None, route.spectra > 0)
        if configured != saved:
            warnings.warn(
                f"The checkpoint's band route ({route!r}) replaces the configured one "
                f"(band_route {options.band_route!r}"
                + (f", num_components {options.num_components}" if pca else "")
                + f", append_spectra {options.append_spectra}"
                + "): the model was trained on it. To use another band route, train a model on it.",
                UserWarning,
                stacklevel=4,
            )

    def _warn_if_split_replaced(self, restored: Split) -> None:
        if self.split_file is not None:
            configured = Split.load(self.split_file)
            if all(np.array_equal(getattr(configured, n), getattr(restored, n)) for n in _SETS):
                return
            described = f"split_file {self.split_file}"
        else:
            protocol, seed, params = self.configured_parameters()
            if protocol in PROTOCOLS:  # unknown names fail when a split is drawn
                defaults = inspect.signature(PROTOCOLS[protocol]).parameters.values()
                params = {
                    **{p.name: p.default for p in defaults if p.default is not p.empty},
                    **params,
                }
            params.pop("seed", None)
            saved = {key: restored.params.get(key) for key in params}
            if (protocol, seed, params) == (restored.protocol, restored.seed, saved):
                return
            described = f"{protocol}, seed {seed}, {params}"
        warnings.warn(
            f"The checkpoint's split ({restored.protocol}, seed {restored.seed}, "
            f"{ {k: v for k, v in restored.params.items() if k != 'classes_missing'} }) replaces "
            f"the configured one ({described}), so the model is evaluated on pixels it was not "
            "trained on. To evaluate another split, train a model on it.",
            UserWarning,
            stacklevel=4,
        )
