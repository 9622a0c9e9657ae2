"""What both hyperspectral datamodules share: the scene, its split, the band route and its state.

The scene's cube is loaded once and kept in memory. The split and the band route are resolved
lazily, when a dataloader is built, because Lightning restores a checkpoint's datamodule state
only after ``setup()``: state restored by :meth:`load_state_dict` therefore always wins over a
fresh fit, and ``test``/``predict`` in a new process use the training run's exact statistics.
"""

from __future__ import annotations

import inspect
import json
import logging
import warnings
from typing import Any, ClassVar

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info

from terratorch_hsi_peft.datamodules.source import SceneLoader
from terratorch_hsi_peft.datamodules.windows import pixel_major
from terratorch_hsi_peft.datasets import (
    PROTOCOLS,
    HyperspectralScene,
    Split,
    make_split,
)
from terratorch_hsi_peft.models.spectral_path_spec import check_spectral_path_data
from terratorch_hsi_peft.terratorch_compat import terratorch_writers
from terratorch_hsi_peft.transforms import (
    BandRoute,
    BandRouteName,
    MissingBandPolicy,
    SampleTransformDataset,
    split_train_transform,
)
from terratorch_hsi_peft.utils.cli_values import task_model_args

__all__ = ["HyperspectralDataModule"]

logger = logging.getLogger(__name__)

_SETS = ("train", "val", "test")

#: Label of pixels the loss and the metrics skip (set the task's ``ignore_index`` to it).
IGNORE_INDEX = -1

#: The plugin's datamodule for each stock TerraTorch task.
_DATAMODULE_OF_TASK = {
    "ClassificationTask": "HyperspectralPatchDataModule",
    "SemanticSegmentationTask": "HyperspectralSceneDataModule",
}


class HyperspectralDataModule(LightningDataModule):
    """Base of ``HyperspectralPatchDataModule`` and ``HyperspectralSceneDataModule``.

    Subclasses build their datasets in ``_make_dataset(stage)`` from :meth:`routed_cube` and
    :attr:`split`, and paste predictions back into a scene map in ``paste_predictions``. They
    declare only their own arguments and pass the ones below on with ``**kwargs``, which
    jsonargparse follows: ``terratorch fit --help`` and ``--print_config`` list these too.

    Args:
        scene: name of a benchmark scene (``indian_pines``, ``pavia_university``, ...;
            ``generic`` for your own files, ``product`` for a sensor product, see
            ``scene_options``) or a loaded ``HyperspectralScene`` (e.g. a ``class_path:
            terratorch_hsi_peft.datasets.ProductScene`` with its ``init_args``).
        root: folder holding the scene's files (receiving them with ``download``).
        download: fetch missing benchmark files (checked, written atomically).
        scene_options: more arguments for the scene loader: ``checksum`` for benchmark scenes;
            ``image_path``, ``label_path``, ``image_key``, ``label_key``, ``wavelengths``,
            ``class_names``, ``name``, ``gsd`` for ``generic``; ``path``, ``labels`` (a
            label raster or polygons), ``format``, ``label_attribute``, ``class_names``,
            ``drop_bad_bands``, ``name`` for ``product`` (relative paths from ``root``).
        split: how to draw the train/val/test split: ``protocol`` (``per_class`` or
            ``spatially_disjoint``), ``seed``, and the protocol's parameters (``train_size``,
            ``val_size``, ``min_train_per_class``; ``block_size``, ``test_fraction``,
            ``val_fraction``, ``patch_size`` - the patch datamodule defaults the latter to its
            own ``patch_size``). Default: ``per_class`` with seed 0 and 10% of each class for
            training.
        split_file: a split saved with ``Split.save`` (``.npz``/``.json``) instead of ``split``.
        band_route: ``pca`` (per-band z-score, then ``num_components`` principal components,
            whitened), ``standardize`` (per-band z-score), ``sentinel2`` (SpectralGPT's 12
            Sentinel-2 bands simulated from the sensor's wavelengths, then z-scored) or ``none``
            (raw values). Statistics come from training pixels only.
        num_components: principal components kept by ``pca`` (the source paper: 12).
        pca_whiten: scale each principal component to unit training variance.
        wavelengths: band centres in nm, overriding the scene's (for ``sentinel2``).
        missing_bands: Sentinel-2 bands the sensor does not cover (e.g. SWIR for ROSIS):
            ``zero`` (fed as the training mean, with a warning), ``nearest`` (the closest sensor
            channel, with a warning) or ``error``.
        min_coverage: fraction of a Sentinel-2 band's Gaussian response the sensor must cover
            for the band to be simulated.
        append_spectra: after the routed bands, append every band of the scene, z-scored with
            training statistics, for the model's full-spectrum spectral path (set
            ``model_args.spectral_path.bands`` to the scene's band count; the encoder still
            reads the routed bands). Needs ``pca`` or ``sentinel2``.
        batch_size: samples per batch (also for predict).
        num_workers: DataLoader worker processes (0: cut batches in the main process, usually
            fast enough as cutting is one gather per batch).
        class_weights: removed (the data layer no longer changes the task's loss); any value
            is an error naming the replacement, the
            :class:`~terratorch_hsi_peft.callbacks.BalancedClassWeights` callback.
        train_transform: training augmentation in TerraTorch's convention: a list of
            ``class_path``/``init_args`` entries (or instances). Albumentations transforms run
            per sample in the loader (a subclass's docstring says what a sample is); the
            plugin's batch transforms (``terratorch_hsi_peft.transforms.RandomFlipRotate``,
            ``SpectralJitter``) run on whole batches on their device. Validation, test and
            predict samples are never transformed.
    """

    #: The stock TerraTorch task the batches are made for.
    task_name: ClassVar[str] = ""

    def __init__(
        self,
        scene: str | HyperspectralScene = "indian_pines",
        root: str | None = None,
        download: bool = False,
        scene_options: dict[str, Any] | None = None,
        split: dict[str, Any] | None = None,
        split_file: str | None = None,
        band_route: BandRouteName = "pca",
        num_components: int = 12,
        pca_whiten: bool = True,
        wavelengths: list[float] | None = None,
        missing_bands: MissingBandPolicy = "zero",
        min_coverage: float = 0.25,
        append_spectra: bool = False,
        batch_size: int = 64,
        num_workers: int = 0,
        class_weights: bool | None = None,
        train_transform: list[Any] | None = None,
    ) -> None:
        super().__init__()
        self.scene_loader = SceneLoader(scene, root, download, scene_options)
        if split is not None and split_file is not None:
            raise ValueError(
                "Give either split (to draw one) or split_file (to load one), not both."
            )
        if class_weights is not None:
            raise ValueError(
                "The datamodule's class_weights option was removed: the data layer no longer "
                "changes the task's loss. Remove class_weights from data.init_args; for weights "
                "from the training counts (what class_weights: true did) add to "
                "trainer.callbacks:\n"
                "  - class_path: terratorch_hsi_peft.callbacks.BalancedClassWeights\n"
                "or give the task a fixed class_weights list."
            )
        if batch_size < 1 or num_workers < 0:
            raise ValueError(f"batch_size={batch_size} must be >= 1, num_workers >= 0.")
        self.split_config = dict(split or {"protocol": "per_class"})
        self.split_file = split_file
        self.band_route = band_route
        self.num_components = num_components
        self.pca_whiten = pca_whiten
        self.wavelengths = wavelengths
        self.missing_bands = missing_bands
        self.min_coverage = min_coverage
        self.append_spectra = append_spectra
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.train_transform = train_transform
        # Albumentations run per sample in the loader; batch transforms on the device.
        self._sample_transform, self._batch_transforms = split_train_transform(train_transform)

        self._checkpoint_class_names: list[str] | None = None
        self._split: Split | None = None
        self._route: BandRoute | None = None
        self._cube: torch.Tensor | None = None
        self.predict_dataset: Any = None

    # -- the scene and what the model config needs --------------------------------------------

    def prepare_data(self) -> None:
        """Download the scene's files when ``download`` is set (loading verifies them)."""
        if self.scene_loader.download:
            self.scene  # noqa: B018 - loading fetches and verifies missing files

    @property
    def scene(self) -> HyperspectralScene:
        """The loaded scene (its cube is read once and kept)."""
        return self.scene_loader.scene

    @property
    def num_classes(self) -> int:
        """K: set the task's ``model_args.num_classes`` to it."""
        return len(self.class_names)

    @property
    def class_names(self) -> list[str]:
        """Names of class indices 0..K-1 (raw labels 1..K).

        A prediction-only scene without class names takes those of the checkpoint it is
        predicted with, else ``class_1`` ... ``class_K`` for the attached task's ``num_classes``.
        """
        if self.scene.class_names:
            return list(self.scene.class_names)
        if self._checkpoint_class_names is not None:
            return list(self._checkpoint_class_names)
        module = self.trainer.lightning_module if self.trainer is not None else None
        hparams = getattr(module, "hparams", None) or {}
        count = task_model_args(hparams).get("num_classes")
        return [f"class_{k}" for k in range(1, count + 1)] if _is_int(count) else []

    @property
    def num_bands(self) -> int:
        """Bands the encoder receives after the band route: set ``backbone_num_bands`` to it."""
        if self._route is not None:
            return self._route.num_routed
        return {"pca": self.num_components, "sentinel2": 12}.get(
            self.band_route, self.scene.num_bands
        )

    @property
    def num_spectra(self) -> int:
        """Bands appended after them for the spectral path (``append_spectra``; else 0): set
        ``model_args.spectral_path.bands`` to it."""
        if self._route is not None:
            return self._route.spectra
        return self.scene.num_bands if self.append_spectra else 0

    def setup(self, stage: str) -> None:
        """Load the scene and check it against the attached task and trainer.

        Raises:
            ValueError: a labelled stage on a scene without labels; a task whose
                ``num_classes``, ``backbone_num_bands`` or ``ignore_index`` do not fit the data,
                or the other stock task; ``predict`` with TerraTorch's ``CustomWriter`` and a
                :class:`~terratorch_hsi_peft.callbacks.ClassMapWriter` that keeps it (without
                any ClassMapWriter one is added).
        """
        if stage in ("fit", "validate", "test") and not self.scene.has_labels:
            raise ValueError(
                f"Scene {self.scene.name!r} has no labels, so it cannot be used to {stage}; "
                "give label_path (generic scenes) or only run predict."
            )
        module = self.trainer.lightning_module if self.trainer is not None else None
        if module is not None:
            self._check_task(module)
        if stage == "predict" and self.trainer is not None:
            self._check_prediction_writer()

    def _check_task(self, module: Any) -> None:
        """Compare the task's settings with the data."""
        mro = {cls.__name__ for cls in type(module).__mro__}
        for task, datamodule in _DATAMODULE_OF_TASK.items():
            if task in mro and task != self.task_name:
                raise ValueError(
                    f"{type(self).__name__} makes batches for {self.task_name}, not for {task}; "
                    f"use {datamodule} with {task}."
                )
        hparams = getattr(module, "hparams", None) or {}
        model_args = task_model_args(hparams)
        expected = {"backbone_num_bands": self.num_bands}
        # The spectral path against the appended spectra and the task's aux_loss.
        check_spectral_path_data(
            model_args,
            hparams.get("aux_loss"),
            appended=self.num_spectra,
            scene_bands=self.scene.num_bands,
            data=f"append_spectra: {self.append_spectra}, "
            f"{self.scene.name}: {self.scene.num_bands} bands",
        )
        # A prediction-only scene without class names takes the checkpoint's (restored later).
        if self.scene.num_classes:
            expected["num_classes"] = self.scene.num_classes
        for key, value in expected.items():
            read = model_args.get(key)
            if read is not None and not (_is_int(read) and read == value):
                raise ValueError(
                    f"The task's model_args.{key} is {read!r} but the data give {value} "
                    f"({self.scene.name}, band_route {self.band_route!r}); set {key}: {value}."
                )
        if "ignore_index" in hparams:
            self._check_ignore_index(hparams["ignore_index"])  # typed: a task init argument

    def _check_ignore_index(self, ignore_index: Any) -> None:
        """Raise a ValueError when the task's ``ignore_index`` does not fit the batches."""

    def _check_prediction_writer(self) -> None:
        """TerraTorch's ``CustomWriter`` cannot write these batches: ClassMapWriter replaces it.

        Without a ClassMapWriter (``config_deploy.yaml`` drops ``trainer.callbacks``) one is
        added, with its defaults; the datamodule's setup runs before the callbacks' setup, so it
        takes part in the whole ``predict``.
        """
        callbacks = self.trainer.callbacks
        if not terratorch_writers(callbacks):
            return
        # Imported here: the writer pulls in matplotlib and rasterio, needed only to predict.
        from terratorch_hsi_peft.callbacks.class_map_writer import ClassMapWriter

        writers = [cb for cb in callbacks if isinstance(cb, ClassMapWriter)]
        if any(cb.replace_terratorch_writer for cb in writers):
            return
        if not writers:
            callbacks.append(ClassMapWriter())
            rank_zero_info(
                f"{type(self).__name__}: trainer.callbacks has no ClassMapWriter (a "
                "config_deploy.yaml has no callbacks); added one to write the class map."
            )
            return
        raise ValueError(
            f"predict with {type(self).__name__} needs the plugin's ClassMapWriter with "
            "replace_terratorch_writer: true (its default): TerraTorch's CustomWriter, which the "
            "terratorch command always adds, cannot write these batches (it expects a GeoTIFF "
            "file name per sample). Remove replace_terratorch_writer: false from the "
            "ClassMapWriter of trainer.callbacks."
        )

    # -- split --------------------------------------------------------------------------------

    @property
    def split(self) -> Split:
        """The train/val/test split: restored from a checkpoint, else loaded, else drawn."""
        if self._split is None:
            labels = self.scene.labels
            if labels is None:
                raise ValueError(f"Scene {self.scene.name!r} has no labels and so no split.")
            if self.split_file is not None:
                split = Split.load(self.split_file)
            else:
                config = dict(self.split_config)
                protocol = config.pop("protocol", "per_class")
                seed = config.pop("seed", 0)
                split = make_split(labels, protocol, seed, **self._split_defaults(protocol, config))
            split.validate(labels)
            self._split = split
        return self._split

    def _split_defaults(self, protocol: str, params: dict[str, Any]) -> dict[str, Any]:
        """Protocol parameters the datamodule fills in; subclasses add their own."""
        return params

    def targets(self, pixels: np.ndarray) -> np.ndarray:
        """Class indices (raw label - 1) of flat pixel indices."""
        return self.scene.labels.reshape(-1)[pixels] - 1

    # -- band route -----------------------------------------------------------------------------

    @property
    def route(self) -> BandRoute:
        """The fitted band route: restored from a checkpoint, or fitted on training pixels only."""
        if self._route is None:
            if not self.scene.has_labels:
                raise ValueError(
                    f"Scene {self.scene.name!r} has no labels, so the {self.band_route!r} band "
                    "route cannot be fitted on its training pixels. Predict it with the "
                    "checkpoint of a run trained with this datamodule (--ckpt_path): its band "
                    "route is restored from there."
                )
            pixels = self.scene.image.reshape(-1, self.scene.num_bands)[self.split.train]
            wavelengths = self.wavelengths
            if wavelengths is None and self.scene.wavelengths is not None:
                wavelengths = self.scene.wavelengths
            self._route = BandRoute.fit(
                self.band_route,
                pixels,
                num_components=self.num_components,
                whiten=self.pca_whiten,
                wavelengths=wavelengths,
                missing_bands=self.missing_bands,
                min_coverage=self.min_coverage,
                append_spectra=self.append_spectra,
            )
            logger.info(
                "%s: %r band route fitted on %d training pixels: %d -> %d bands.",
                type(self).__name__,
                self.band_route,
                len(self.split.train),
                self._route.num_bands_in,
                self._route.num_bands_out,
            )
        return self._route

    def routed_cube(self) -> torch.Tensor:
        """The whole scene through the band route: one (k, H, W) float32 tensor, built once.

        Laid out pixel-major in memory (:func:`~.windows.pixel_major`) for fast window gathers.
        """
        if self._cube is None:
            cube = torch.from_numpy(self.scene.image).permute(2, 0, 1)
            self._cube = pixel_major(self.route(cube))
        return self._cube

    # -- class weights --------------------------------------------------------------------------

    def class_weight_values(self) -> list[float]:
        """Loss weights ``n_train / (K * n_c)`` from training counts (0 for absent classes).

        :class:`~terratorch_hsi_peft.callbacks.BalancedClassWeights` sets them on the task.
        """
        counts = np.bincount(self.targets(self.split.train), minlength=self.num_classes)
        with np.errstate(divide="ignore"):
            weights = np.where(counts > 0, counts.sum() / (self.num_classes * counts), 0.0)
        return weights.tolist()

    # -- dataloaders ----------------------------------------------------------------------------

    def _make_dataset(self, stage: str) -> Any:
        raise NotImplementedError

    def _loader(self, stage: str, shuffle: bool = False) -> torch.utils.data.DataLoader:
        dataset = self._make_dataset(stage)
        if stage == "train" and self._sample_transform is not None:
            dataset = SampleTransformDataset(dataset, self._sample_transform)
        if stage == "predict":
            self.predict_dataset = dataset
        return torch.utils.data.DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=_already_batched,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        """Batches around training pixels, reshuffled every epoch."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        """Batches around validation pixels (empty when the split has none)."""
        return self._loader("val")

    def test_dataloader(self) -> torch.utils.data.DataLoader:
        """Batches around test pixels."""
        return self._loader("test")

    def predict_dataloader(self) -> torch.utils.data.DataLoader:
        """Batches covering every pixel of the scene, labelled or not."""
        return self._loader("predict")

    def augment(self, batch: dict[str, Any]) -> dict[str, Any]:
        """``train_transform``'s batch transforms applied to a batch, on the batch's device."""
        for transform in self._batch_transforms:
            batch = transform(batch)
        return batch

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict:
        """Augment training batches (:meth:`augment`); other stages pass unchanged."""
        if self.trainer is not None and self.trainer.training:
            batch = self.augment(batch)
        return batch

    def paste_predictions(
        self, class_map: np.ndarray, indices: list[int], predictions: torch.Tensor
    ) -> None:
        """Write predicted class indices of predict samples ``indices`` into ``class_map``."""
        if self.predict_dataset is None:
            raise RuntimeError("No predict dataloader was built; run trainer.predict first.")
        self.predict_dataset.paste(class_map, indices, predictions)

    # -- checkpoint state -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The fitted band route and the split, saved in every Lightning checkpoint."""
        if self._split is None and self._route is None:
            return {}
        state: dict[str, Any] = {
            "band_route": self.route.state_dict(),
            "class_names": json.dumps(self.class_names),
        }
        if self.scene.has_labels:
            split = self.split
            state["split"] = {
                **{
                    name: torch.from_numpy(getattr(split, name))
                    for name in ("train", "val", "test")
                },
                "protocol": split.protocol,
                "seed": int(split.seed),
                "params": json.dumps(split.params, default=str),
                "shape": list(split.shape or self.scene.shape),
            }
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the band route and, for the same scene size, the split; they win over a refit.

        Raises:
            ValueError: the state is not one this datamodule writes (damaged or foreign).
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
                f"The checkpoint's {type(self).__name__} state is damaged or was not written by "
                f"this datamodule ({type(err).__name__}: {err}); use a checkpoint of a run "
                "trained with it."
            ) from err
        self._warn_if_route_replaced(route)
        self._route = route
        self._cube = None
        if names is not None:
            self._checkpoint_class_names = names
            if self.scene.class_names and names != self.scene.class_names:
                warnings.warn(
                    f"The checkpoint was trained on classes {names}, the scene "
                    f"{self.scene.name!r} has {self.scene.class_names}; maps and metrics use the "
                    "scene's names. Check that each class index means the same in both.",
                    UserWarning,
                    stacklevel=2,
                )
        if restored is None or not self.scene.has_labels:
            return
        if restored.shape != self.scene.shape:
            logger.info("Checkpoint split is for another scene size; the configured one is used.")
            return
        restored.validate(self.scene.labels)
        self._warn_if_split_replaced(restored)
        self._split = restored

    def _warn_if_route_replaced(self, route: BandRoute) -> None:
        configured = (
            self.band_route,
            self.num_components if self.band_route == "pca" else None,
            self.append_spectra,
        )
        saved = (route.route, route.num_routed if route.route == "pca" else None, route.spectra > 0)
        if configured != saved:
            warnings.warn(
                f"The checkpoint's band route ({route!r}) replaces the configured one "
                f"(band_route {self.band_route!r}"
                + (f", num_components {self.num_components}" if self.band_route == "pca" else "")
                + f", append_spectra {self.append_spectra}"
                + "): the model was trained on it. To use another band route, train a model on it.",
                UserWarning,
                stacklevel=3,
            )

    def _warn_if_split_replaced(self, restored: Split) -> None:
        if self.split_file is not None:
            configured = Split.load(self.split_file)
            if all(np.array_equal(getattr(configured, n), getattr(restored, n)) for n in _SETS):
                return
            described = f"split_file {self.split_file}"
        else:
            config = dict(self.split_config)
            protocol = config.pop("protocol", "per_class")
            seed = config.pop("seed", 0)
            params = self._split_defaults(protocol, config)
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
            stacklevel=3,
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _already_batched(batch: Any) -> Any:
    """Collate function for datasets whose ``__getitems__`` returns a whole batch."""
    return batch
