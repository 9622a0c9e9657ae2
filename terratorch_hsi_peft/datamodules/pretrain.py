"""Unlabelled windows of one or several scenes, for masked-autoencoder pre-training."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule

from terratorch_hsi_peft.datamodules.checks import check_model_args
from terratorch_hsi_peft.datamodules.loaders import batch_loader, resize_windows, skip_validation
from terratorch_hsi_peft.datamodules.scene import tile_grid
from terratorch_hsi_peft.datamodules.scene_state import RouteOptions, SceneState
from terratorch_hsi_peft.datamodules.source import SceneLoader
from terratorch_hsi_peft.datamodules.windows import gather_windows, pixel_major
from terratorch_hsi_peft.datasets import HyperspectralScene, Split
from terratorch_hsi_peft.transforms import BandRoute, BandRouteName, MissingBandPolicy
from terratorch_hsi_peft.utils.cli_values import task_model_args

__all__ = ["HyperspectralPretrainDataModule", "PretrainWindowDataset", "SceneSource"]

logger = logging.getLogger(__name__)

#: The keys of a ``scenes`` entry: the scene loader's, then the pre-training scene's own.
_LOADER_KEYS = ("scene", "root", "download", "scene_options")
_SCENE_KEYS = (*_LOADER_KEYS, "wavelengths", "split", "split_file", "leave_out_test")


class SceneSource:
    """One scene of a pre-training set: where its windows may come from and its band route.

    Built from one ``scenes`` entry of :class:`HyperspectralPretrainDataModule` by
    :meth:`from_config`, whose keys are:

    - ``scene``: a benchmark scene name (``indian_pines``, ...), ``generic``, or a loaded scene;
      ``root``: folder of the scene's files (relative ``image_path`` of ``generic`` included);
      ``download``: fetch missing benchmark files; ``scene_options``: more loader arguments
      (``image_path``, ``image_key``, ... for ``generic``): as the fine-tuning datamodules take
      them.
    - ``wavelengths``: band centres in nm (for the ``sentinel2`` route), a list, or
      ``{start: nm, stop: nm}`` for evenly spaced bands; default: the scene's own.
    - ``split``: the downstream split (``protocol``, ``seed`` and its parameters, as the
      fine-tuning datamodules take it, with the same defaults), or ``split_file``: a split
      saved with ``Split.save``. With a split, the band route is fitted on its training
      pixels, exactly as the fine-tuning datamodule fits it, and windows touching its test
      blocks are left out (``leave_out_test``).
    - ``leave_out_test`` (default true): with a split, serve no window that holds a pixel of a
      test block (the inductive protocol; needs a ``spatially_disjoint`` split: a ``per_class``
      split's test pixels are scattered over the whole scene). Set false to pre-train on the
      whole scene (transductive: test pixels seen without their labels).

    Args:
        state: the scene, its split (``None`` without one) and how its route is fitted.
        leave_out_test: see above.
    """

    def __init__(self, state: SceneState, leave_out_test: bool = True) -> None:
        self.state = state
        self.leave_out_test = leave_out_test
        self._excluded: np.ndarray | None = None

    @classmethod
    def from_config(
        cls, entry: Mapping[str, Any] | HyperspectralScene, route: RouteOptions
    ) -> SceneSource:
        """Build from one ``scenes`` entry (a dict of the keys above, or a loaded scene)."""
        if isinstance(entry, HyperspectralScene):
            entry = {"scene": entry}
        if not isinstance(entry, Mapping) or "scene" not in entry:
            raise ValueError(
                f"Each scenes entry must be a mapping with at least 'scene' (and 'root'), got "
                f"{entry!r}; e.g. {{scene: indian_pines, root: ../shared/data/indian_pines}}."
            )
        unknown = sorted(set(entry) - set(_SCENE_KEYS))
        if unknown:
            raise ValueError(
                f"scenes entry {entry.get('scene')!r} has unknown keys {unknown}; valid keys: "
                f"{list(_SCENE_KEYS)}."
            )
        loader = SceneLoader(**{key: entry[key] for key in _LOADER_KEYS if key in entry})
        state = SceneState(
            loader,
            entry.get("split"),
            entry.get("split_file"),
            route,
            entry.get("wavelengths"),
            owner=f"Pre-training scene {getattr(entry['scene'], 'name', entry['scene'])!r}",
        )
        return cls(state, entry.get("leave_out_test", True))

    @property
    def scene(self) -> HyperspectralScene:
        """The loaded scene (read once)."""
        return self.state.scene

    @property
    def name(self) -> str:
        """The scene's name."""
        return self.scene.name

    def split(self) -> Split | None:
        """The configured downstream split, validated against the scene's labels, or None."""
        configured = self.state.split_config is not None or self.state.split_file is not None
        if configured and self.scene.labels is None:
            raise ValueError(
                f"Scene {self.name!r} has no labels, so it has no split; drop split/split_file "
                "from its scenes entry."
            )
        return self.state.split

    def excluded(self) -> np.ndarray:
        """(H, W) mask of pixels no window may hold: the split's test blocks, or nothing."""
        if self._excluded is None:
            self._excluded = self._test_blocks(self.split())
        return self._excluded

    def _test_blocks(self, split: Split | None) -> np.ndarray:
        height, width = self.scene.shape
        excluded = np.zeros((height, width), dtype=bool)
        if split is None or not self.leave_out_test:
            return excluded
        if split.protocol != "spatially_disjoint":
            raise ValueError(
                f"Scene {self.name!r}: a {split.protocol!r} split has no test blocks (its test "
                "pixels are scattered over the scene, so every window would hold one). Use a "
                "spatially_disjoint split for the inductive protocol, or set leave_out_test: "
                "false to pre-train on the whole scene (test pixels seen without labels)."
            )
        block = int(split.params["block_size"])
        rows = np.arange(height) // block
        cols = np.arange(width) // block
        blocks = rows[:, None] * (cols.max() + 1) + cols[None, :]
        test_blocks = np.unique(blocks.reshape(-1)[split.test])
        return np.isin(blocks, test_blocks)

    @property
    def route(self) -> BandRoute:
        """The band route: restored from a checkpoint, else fitted on the split's training
        pixels (as the fine-tuning datamodule fits it), else on every served pixel."""
        if self.state.fitted_route is None:
            split, excluded = self.split(), self.excluded()
            served = np.flatnonzero(~excluded.reshape(-1))
            self.state.fit_route(split.train if split is not None else served)
        return self.state.fitted_route

    def routed_cube(self) -> torch.Tensor:
        """The scene through its band route: a (k, H, W) float32 tensor, built once."""
        self.route  # noqa: B018 - fits the route on this scene's pixels when none is restored
        return self.state.routed_cube()


class PretrainWindowDataset(torch.utils.data.Dataset):
    """Square windows of several band-routed cubes, cut a batch at a time.

    Args:
        cubes: one (k, H, W) tensor per scene (same k).
        origins: (N, 3) int64 rows ``(scene index, top, left)``.
        window_size: window side.

    Batches are ``{"image": (B, 1, k, window, window)}``: TerraTorch's ``[B, C, T, H, W]``
    layout with the bands as T, which lets ``ReconstructionTask`` apply the model's per-band
    mask to its metrics.
    """

    def __init__(self, cubes: list[torch.Tensor], origins: torch.Tensor, window_size: int) -> None:
        self.cubes = [pixel_major(cube) for cube in cubes]
        self.origins = origins
        self.window_size = window_size
        self._offsets = torch.arange(window_size)

    def __len__(self) -> int:
        return len(self.origins)

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """The batch of windows ``indices``."""
        origins = self.origins[torch.as_tensor(indices, dtype=torch.int64)]
        size = self.window_size
        out = torch.empty(len(indices), self.cubes[0].shape[0], size, size)
        for scene in origins[:, 0].unique().tolist():
            chosen = origins[:, 0] == scene
            rows = origins[chosen, 1][:, None] + self._offsets
            cols = origins[chosen, 2][:, None] + self._offsets
            out[chosen] = gather_windows(self.cubes[scene], rows, cols)
        return {"image": out[:, None]}

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: value[0] for key, value in self.__getitems__([index]).items()}


class HyperspectralPretrainDataModule(LightningDataModule):
    """Unlabelled windows of one or several scenes for TerraTorch's ``ReconstructionTask``.

    Every scene goes through its own band route (fitted on that scene), so scenes of different
    sensors mix when the route gives them the same band count: ``sentinel2`` (12 simulated
    Sentinel-2 bands, the route for SpectralGPT's released weights), ``pca`` (each scene's
    ``num_components`` principal components), or ``standardize``/``none`` (the native bands:
    every scene needs the same count). Windows of ``window_size`` pixels start every ``stride``
    pixels (the last one flush with the edge); ``val_fraction`` of them, drawn with ``seed``,
    are held out for validation.

    Batches: ``{"image": (B, 1, k, img_size, img_size)}`` float32 (see
    :class:`PretrainWindowDataset`): windows are cut at the scene's resolution and resized to
    ``img_size`` on the device, as the patch datamodule resizes its windows. Model config:
    ``num_bands`` = :attr:`num_bands`, ``img_size`` = ``img_size``; ``setup`` checks both against
    the task's ``model_args``.

    Inductive protocol: give a scene the split its fine-tuning run will use (``split`` or
    ``split_file`` in its entry, see :class:`SceneSource`). With a ``spatially_disjoint`` split
    its windows then never hold a pixel of a test block (``leave_out_test``). With any split its
    band route is fitted on the split's training pixels, exactly as the fine-tuning datamodule
    fits it, so both steps feed the encoder the same bands. Without a split a scene serves every
    window, and its route is fitted on all its pixels.

    The fitted routes are saved in every Lightning checkpoint (:meth:`state_dict`) and restored
    from it (they win over a refit), as in the fine-tuning datamodules.

    Args:
        scenes: one entry per scene: a mapping with the keys of :class:`SceneSource` (``scene``,
            ``root``, ``download``, ``scene_options``, ``wavelengths``, ``split``,
            ``split_file``, ``leave_out_test``) or a loaded ``HyperspectralScene``.
        root: folder that relative scene roots are taken from; a scene without ``root`` uses it.
        band_route: ``sentinel2``, ``pca``, ``standardize`` or ``none``.
        num_components: principal components kept by ``pca``.
        pca_whiten: scale each principal component to unit variance.
        missing_bands: Sentinel-2 bands a sensor does not cover: ``zero``, ``nearest`` or
            ``error``.
        min_coverage: response fraction below which a Sentinel-2 band counts as missing.
        window_size: window side in pixels, at the scene's resolution; a scene smaller than a
            window is an error.
        stride: distance between window origins (default ``window_size // 2``).
        img_size: side the windows are resized to (bilinear) before the model; default
            ``window_size`` (no resizing). Set it as the fine-tuning datamodule's ``img_size``
            when pre-training on its window size (e.g. 9x9 windows resized to 32x32).
        val_fraction: share of windows held out for validation, in [0, 1).
        seed: seed of the validation draw.
        batch_size: windows per batch.
        num_workers: DataLoader worker processes.
    """

    def __init__(
        self,
        scenes: list[dict[str, Any]] | list[HyperspectralScene],
        root: str | None = None,
        band_route: BandRouteName = "sentinel2",
        num_components: int = 12,
        pca_whiten: bool = True,
        missing_bands: MissingBandPolicy = "zero",
        min_coverage: float = 0.25,
        window_size: int = 32,
        stride: int | None = None,
        img_size: int | None = None,
        val_fraction: float = 0.0,
        seed: int = 0,
        batch_size: int = 16,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if isinstance(scenes, Mapping | str | HyperspectralScene) or not scenes:
            raise ValueError(
                "scenes must be a non-empty list of scene entries, e.g. [{scene: indian_pines, "
                "root: ../shared/data/indian_pines}]."
            )
        self.root = root
        route = RouteOptions(band_route, num_components, pca_whiten, missing_bands, min_coverage)
        self.sources = [SceneSource.from_config(_rooted(entry, root), route) for entry in scenes]
        stride = stride if stride is not None else max(window_size // 2, 1)
        if window_size < 1 or stride < 1 or stride > window_size:
            raise ValueError(
                f"window_size={window_size} and stride={stride} must be >= 1 with stride <= "
                "window_size (larger strides skip pixels)."
            )
        if img_size is not None and img_size < 1:
            raise ValueError(f"img_size={img_size} must be >= 1 (or null: window_size).")
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction={val_fraction} must be in [0, 1).")
        if batch_size < 1 or num_workers < 0:
            raise ValueError(f"batch_size={batch_size} must be >= 1, num_workers >= 0.")
        self.band_route = band_route
        self.num_components = num_components
        self.window_size = window_size
        self.stride = stride
        self.img_size = img_size or window_size
        self.val_fraction = val_fraction
        self.seed = seed
        self.batch_size = batch_size
        self.num_workers = num_workers
        self._origins: dict[str, torch.Tensor] | None = None

    # -- what the model config needs ----------------------------------------------------------

    @property
    def num_bands(self) -> int:
        """Bands every window has after the band route: the model's ``num_bands``."""
        fitted = self.sources[0].state.fitted_route
        if fitted is not None:
            return fitted.num_bands_out
        if self.band_route == "pca":
            return self.num_components
        if self.band_route == "sentinel2":
            return 12
        counts = [source.scene.num_bands for source in self.sources]
        self._check_band_counts(counts)
        return counts[0]

    def _check_band_counts(self, counts: list[int]) -> None:
        """Refuse scenes of different band counts; ``counts`` has one entry per scene, in order."""
        if len(set(counts)) > 1:
            each = ", ".join(
                f"{source.name!r}: {count}"
                for source, count in zip(self.sources, counts, strict=True)
            )
            raise ValueError(
                f"The scenes give different band counts on the {self.band_route!r} route "
                f"({each}), but one model needs one band count. Use band_route: sentinel2 (12 "
                "simulated Sentinel-2 bands for every sensor) or pca (num_components each)."
            )

    def prepare_data(self) -> None:
        """Download the files of scenes with ``download: true`` (loading verifies them)."""
        for source in self.sources:
            if source.state.loader.download:
                source.scene  # noqa: B018 - loading fetches and verifies missing files

    def setup(self, stage: str) -> None:
        """Check the attached task's ``model_args.num_bands`` and ``img_size`` against the data;
        a fit without validation windows (``val_fraction: 0``) skips the validation loop."""
        if stage not in ("fit", "validate"):
            raise ValueError(
                f"HyperspectralPretrainDataModule serves unlabelled windows for fit/validate, "
                f"not {stage!r}."
            )
        module = self.trainer.lightning_module if self.trainer is not None else None
        check_model_args(
            task_model_args(getattr(module, "hparams", None)),
            {"num_bands": self.num_bands, "img_size": self.img_size},
            f"band_route {self.band_route!r}, img_size {self.img_size}",
        )
        if stage == "fit" and self.val_fraction == 0:
            skip_validation(self.trainer, type(self).__name__, "val_fraction is 0")

    # -- routes, cubes and windows ------------------------------------------------------------

    @property
    def routes(self) -> list[BandRoute]:
        """The fitted band route of every scene (restored from a checkpoint, else fitted)."""
        routes = [source.route for source in self.sources]
        self._check_band_counts([route.num_bands_out for route in routes])
        return routes

    def routed_cubes(self) -> list[torch.Tensor]:
        """Every scene through its band route: (k, H, W) float32 tensors, built once."""
        self.routes  # noqa: B018 - every scene's route, checked to give one band count
        return [source.routed_cube() for source in self.sources]

    def window_origins(self) -> dict[str, torch.Tensor]:
        """(N, 3) rows ``(scene, top, left)`` of the ``train`` and ``val`` windows."""
        if self._origins is None:
            rows = []
            for index, source in enumerate(self.sources):
                rows.extend(self._scene_windows(index, source, source.excluded()))
            if not rows:
                raise ValueError(
                    "No pre-training window is left: every window holds a test-block pixel. Use "
                    "smaller windows (window_size), or smaller or fewer test blocks."
                )
            origins = torch.tensor(rows, dtype=torch.int64)
            order = torch.randperm(len(origins), generator=torch.Generator().manual_seed(self.seed))
            n_val = round(self.val_fraction * len(origins))
            if self.val_fraction > 0 and (n_val == 0 or n_val == len(origins)):
                raise ValueError(
                    f"val_fraction={self.val_fraction} of {len(origins)} windows leaves an empty "
                    "training or validation set; change val_fraction or stride."
                )
            self._origins = {"val": origins[order[:n_val]], "train": origins[order[n_val:]]}
        return self._origins

    def _scene_windows(
        self, index: int, source: SceneSource, excluded: np.ndarray
    ) -> list[tuple[int, int, int]]:
        height, width = source.scene.shape
        size = self.window_size
        if size > min(height, width):
            raise ValueError(
                f"window_size={size} is larger than scene {source.name!r} "
                f"({height}x{width}); lower window_size."
            )
        tops, _, _ = tile_grid(height, size, self.stride)
        lefts, _, _ = tile_grid(width, size, self.stride)
        # Summed-area table: excluded pixels inside each window in O(1).
        table = np.pad(excluded.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        kept = []
        for top in tops.tolist():
            for left in lefts.tolist():
                inside = (
                    table[top + size, left + size]
                    - table[top, left + size]
                    - table[top + size, left]
                    + table[top, left]
                )
                if inside == 0:
                    kept.append((index, top, left))
        logger.info(
            "Pre-training scene %r: %d of %d windows served.",
            source.name,
            len(kept),
            len(tops) * len(lefts),
        )
        return kept

    # -- dataloaders ----------------------------------------------------------------------------

    def _dataset(self, stage: str) -> PretrainWindowDataset:
        return PretrainWindowDataset(
            self.routed_cubes(), self.window_origins()[stage], self.window_size
        )

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        """Training windows, reshuffled every epoch."""
        return batch_loader(self._dataset("train"), self.batch_size, self.num_workers, True)

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        """Held-out windows (a fit skips validation when ``val_fraction`` is 0)."""
        return batch_loader(self._dataset("val"), self.batch_size, self.num_workers)

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict:
        """Resize the windows to ``img_size`` on the device the batch now lives on."""
        batch["image"] = resize_windows(batch["image"], self.img_size)
        return batch

    # -- checkpoint state -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Every scene's fitted band route, saved in every Lightning checkpoint."""
        routes = [source.state.fitted_route for source in self.sources]
        if any(route is None for route in routes):
            return {}
        return {
            "scenes": [source.name for source in self.sources],
            "band_routes": [route.state_dict() for route in routes],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the routes of the same scenes; they win over a refit."""
        if not state_dict:
            return
        names = [source.name for source in self.sources]
        try:
            saved = list(state_dict["scenes"])
            routes = [BandRoute.from_state_dict(s) for s in state_dict["band_routes"]]
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"The checkpoint's HyperspectralPretrainDataModule state is damaged or was not "
                f"written by this datamodule ({type(err).__name__}: {err}); use a checkpoint of "
                "a pre-training run."
            ) from err
        if saved != names:
            raise ValueError(
                f"The checkpoint's band routes are for scenes {saved}, this "
                f"datamodule has {names}; resume with the same scenes in the same order."
            )
        for source, route in zip(self.sources, routes, strict=True):
            source.state.restore_route(route)


def _rooted(entry: Any, root: str | None) -> Any:
    """A scenes entry with its root resolved against the datamodule's ``root``."""
    if root is None or not isinstance(entry, Mapping):
        return entry
    own = entry.get("root")
    return {**entry, "root": root if own is None else str(Path(root).expanduser() / own)}
