"""Unlabelled windows of one or several scenes, for masked-autoencoder pre-training."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningDataModule

from terratorch_hsi_peft.datamodules.scene import tile_grid
from terratorch_hsi_peft.datamodules.source import SceneLoader
from terratorch_hsi_peft.datamodules.windows import gather_windows, pixel_major
from terratorch_hsi_peft.datasets import HyperspectralScene, Split, make_split
from terratorch_hsi_peft.transforms import BandRoute, BandRouteName, MissingBandPolicy
from terratorch_hsi_peft.utils.cli_values import task_model_args

__all__ = ["HyperspectralPretrainDataModule", "PretrainWindowDataset", "SceneSource"]

logger = logging.getLogger(__name__)

_SCENE_KEYS = (
    "scene",
    "root",
    "download",
    "scene_options",
    "wavelengths",
    "split",
    "split_file",
    "leave_out_test",
)


class SceneSource(SceneLoader):
    """One scene of a pre-training set: where its windows may come from and its band route.

    Args (the keys of one ``scenes`` entry of :class:`HyperspectralPretrainDataModule`):
        scene: a benchmark scene name (``indian_pines``, ...), ``generic``, or a loaded scene.
        root: folder of the scene's files (relative ``image_path`` of ``generic`` included).
        download: fetch missing benchmark files.
        scene_options: more loader arguments (``image_path``, ``image_key``, ... for
            ``generic``).
        wavelengths: band centres in nm (for the ``sentinel2`` route), a list, or
            ``{start: nm, stop: nm}`` for evenly spaced bands; default: the scene's own.
        split: the downstream split (``protocol``, ``seed`` and its parameters, as the
            fine-tuning datamodules take it), or ``split_file``. With a split, the band route is
            fitted on its training pixels, exactly as the fine-tuning datamodule fits it, and
            windows touching its test blocks are left out (``leave_out_test``).
        split_file: a split saved with ``Split.save`` instead of ``split``.
        leave_out_test: with a split, serve no window that holds a pixel of a test block (the
            inductive protocol; needs a ``spatially_disjoint`` split: a ``per_class`` split's
            test pixels are scattered over the whole scene). Set false to pre-train on the
            whole scene (transductive: test pixels seen without their labels).
    """

    def __init__(
        self,
        scene: str | HyperspectralScene,
        root: str | None = None,
        download: bool = False,
        scene_options: dict[str, Any] | None = None,
        wavelengths: list[float] | dict[str, float] | None = None,
        split: dict[str, Any] | None = None,
        split_file: str | None = None,
        leave_out_test: bool = True,
    ) -> None:
        super().__init__(scene, root, download, scene_options)
        if split is not None and split_file is not None:
            raise ValueError(f"Pre-training scene {scene!r}: give split or split_file, not both.")
        self.wavelengths_spec = wavelengths
        self.split_config = None if split is None else dict(split)
        self.split_file = split_file
        self.leave_out_test = leave_out_test

    @classmethod
    def from_config(cls, entry: Mapping[str, Any] | HyperspectralScene) -> SceneSource:
        """Build from one ``scenes`` entry (a dict of the keys above, or a loaded scene)."""
        if isinstance(entry, HyperspectralScene):
            return cls(entry)
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
        return cls(**entry)

    @property
    def name(self) -> str:
        """The scene's name."""
        return self.scene.name

    def wavelengths(self) -> np.ndarray | None:
        """Band centres in nm: the configured ones, else the scene's."""
        spec = self.wavelengths_spec
        if isinstance(spec, Mapping):
            if set(spec) != {"start", "stop"}:
                raise ValueError(
                    f"wavelengths of {self.name!r} as a mapping takes exactly start and stop "
                    f"(nm of the first and last band), got {sorted(spec)}."
                )
            return np.linspace(float(spec["start"]), float(spec["stop"]), self.scene.num_bands)
        if spec is not None:
            return np.asarray(spec, dtype=np.float64)
        return self.scene.wavelengths

    def split(self) -> Split | None:
        """The configured downstream split, validated against the scene's labels, or None."""
        if self.split_config is None and self.split_file is None:
            return None
        labels = self.scene.labels
        if labels is None:
            raise ValueError(
                f"Scene {self.name!r} has no labels, so it has no split; drop split/split_file "
                "from its scenes entry."
            )
        if self.split_file is not None:
            split = Split.load(self.split_file)
        else:
            config = dict(self.split_config)
            protocol = config.pop("protocol", "per_class")
            seed = config.pop("seed", 0)
            split = make_split(labels, protocol, seed, **config)
        split.validate(labels)
        return split

    def excluded(self, split: Split | None) -> np.ndarray:
        """(H, W) mask of pixels no window may hold: the split's test blocks, or nothing."""
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

    def fit_route(
        self, split: Split | None, excluded: np.ndarray, **route_options: Any
    ) -> BandRoute:
        """The band route, fitted on the split's training pixels, else on every served pixel."""
        pixels = self.scene.image.reshape(-1, self.scene.num_bands)
        fitted_on = split.train if split is not None else np.flatnonzero(~excluded.reshape(-1))
        return BandRoute.fit(
            pixels=pixels[fitted_on], wavelengths=self.wavelengths(), **route_options
        )


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
        self.sources = [SceneSource.from_config(_rooted(entry, root)) for entry in scenes]
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
        self.route_options = {
            "route": band_route,
            "num_components": num_components,
            "whiten": pca_whiten,
            "missing_bands": missing_bands,
            "min_coverage": min_coverage,
        }
        self.num_components = num_components
        self.window_size = window_size
        self.stride = stride
        self.img_size = img_size or window_size
        self.val_fraction = val_fraction
        self.seed = seed
        self.batch_size = batch_size
        self.num_workers = num_workers
        self._routes: list[BandRoute] | None = None
        self._cubes: list[torch.Tensor] | None = None
        self._origins: dict[str, torch.Tensor] | None = None
        self._splits: list[Split | None] | None = None
        self._excluded: list[np.ndarray] | None = None

    # -- what the model config needs ----------------------------------------------------------

    @property
    def num_bands(self) -> int:
        """Bands every window has after the band route: the model's ``num_bands``."""
        if self._routes is not None:
            return self._routes[0].num_bands_out
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
            if source.download:
                source.scene  # noqa: B018 - loading fetches and verifies missing files

    def setup(self, stage: str) -> None:
        """Check the attached task's ``model_args.num_bands`` and ``img_size`` against the data."""
        if stage not in ("fit", "validate"):
            raise ValueError(
                f"HyperspectralPretrainDataModule serves unlabelled windows for fit/validate, "
                f"not {stage!r}."
            )
        module = self.trainer.lightning_module if self.trainer is not None else None
        model_args = task_model_args(getattr(module, "hparams", None))
        for key, value in (("num_bands", self.num_bands), ("img_size", self.img_size)):
            read = model_args.get(key)
            exact = isinstance(read, int) and not isinstance(read, bool) and read == value
            if read is not None and not exact:
                raise ValueError(
                    f"The task's model_args.{key} is {read!r} but the data give {value} "
                    f"(band_route {self.band_route!r}, img_size {self.img_size}); set "
                    f"{key}: {value}."
                )

    # -- routes, cubes and windows ------------------------------------------------------------

    @property
    def routes(self) -> list[BandRoute]:
        """The fitted band route of every scene (restored from a checkpoint, else fitted)."""
        if self._routes is None:
            splits, excluded = self._splits_and_excluded()
            self._routes = [
                source.fit_route(split, region, **self.route_options)
                for source, split, region in zip(self.sources, splits, excluded, strict=True)
            ]
            for source, route in zip(self.sources, self._routes, strict=True):
                logger.info("Pre-training scene %r: %r", source.name, route)
        self._check_band_counts([route.num_bands_out for route in self._routes])
        return self._routes

    def _splits_and_excluded(self) -> tuple[list[Split | None], list[np.ndarray]]:
        if self._splits is None:
            self._splits = [source.split() for source in self.sources]
            self._excluded = [
                source.excluded(split)
                for source, split in zip(self.sources, self._splits, strict=True)
            ]
        return self._splits, self._excluded

    def routed_cubes(self) -> list[torch.Tensor]:
        """Every scene through its band route: (k, H, W) float32 tensors, built once."""
        if self._cubes is None:
            routes = self.routes
            self._cubes = [
                route(torch.from_numpy(source.scene.image).permute(2, 0, 1)).contiguous()
                for source, route in zip(self.sources, routes, strict=True)
            ]
        return self._cubes

    def window_origins(self) -> dict[str, torch.Tensor]:
        """(N, 3) rows ``(scene, top, left)`` of the ``train`` and ``val`` windows."""
        if self._origins is None:
            _, excluded_regions = self._splits_and_excluded()
            rows = []
            for index, (source, excluded) in enumerate(
                zip(self.sources, excluded_regions, strict=True)
            ):
                rows.extend(self._scene_windows(index, source, excluded))
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

    def _loader(self, stage: str, shuffle: bool) -> torch.utils.data.DataLoader:
        dataset = PretrainWindowDataset(
            self.routed_cubes(), self.window_origins()[stage], self.window_size
        )
        return torch.utils.data.DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=_already_batched,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        """Training windows, reshuffled every epoch."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        """Held-out windows (none when ``val_fraction`` is 0)."""
        return self._loader("val", shuffle=False)

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict:
        """Resize the windows to ``img_size`` on the device the batch now lives on."""
        image = batch["image"]
        if image.shape[-1] != self.img_size:
            batch_size, _, bands, height, width = image.shape
            flat = image.reshape(batch_size, bands, height, width)
            size = (self.img_size, self.img_size)
            resized = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
            batch["image"] = resized[:, None]
        return batch

    # -- checkpoint state -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Every scene's fitted band route, saved in every Lightning checkpoint."""
        if self._routes is None:
            return {}
        return {
            "scenes": [source.name for source in self.sources],
            "band_routes": [route.state_dict() for route in self._routes],
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
        self._routes = routes
        self._cubes = None


def _rooted(entry: Any, root: str | None) -> Any:
    """A scenes entry with its root resolved against the datamodule's ``root``."""
    if root is None or not isinstance(entry, Mapping):
        return entry
    own = entry.get("root")
    return {**entry, "root": root if own is None else str(Path(root).expanduser() / own)}


def _already_batched(batch: Any) -> Any:
    return batch
