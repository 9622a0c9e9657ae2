"""The fine-tuning datamodules' common part: a scene, its state, the task checks and loaders.

:class:`HyperspectralDataModule` composes the shared parts of ``datamodules/``: the scene and its
split, band route and checkpoint state (:class:`~.scene_state.SceneState`), the checks of the
task and the writer (:mod:`.checks`) and the loaders (:mod:`.loaders`). The split and the band
route are resolved lazily, when a dataloader is built, because Lightning restores a checkpoint's
datamodule state only after ``setup()``: state restored by :meth:`load_state_dict` therefore
always wins over a fresh fit, and ``test``/``predict`` in a new process use the training run's
exact statistics.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np
import torch
from lightning.pytorch import LightningDataModule

from terratorch_hsi_peft.datamodules.checks import (
    check_model_args,
    check_prediction_writer,
    check_task_kind,
)
from terratorch_hsi_peft.datamodules.loaders import batch_loader, skip_validation
from terratorch_hsi_peft.datamodules.scene_state import RouteOptions, SceneState
from terratorch_hsi_peft.datamodules.source import SceneLoader
from terratorch_hsi_peft.datasets import HyperspectralScene, Split
from terratorch_hsi_peft.models.spectral_path_spec import check_spectral_path_data
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
            training. Unless it is given, a validation share is held out: ``val_size: 0.1`` (a
            tenth of each class's training pixels) for ``per_class``, ``val_fraction: 0.1``
            (validation blocks carved from the training side) for ``spatially_disjoint``; set
            it to 0 for none (the validation loop is then skipped).
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
        if split is None and split_file is None:
            split = {"protocol": "per_class"}
        self.scene_state = SceneState(
            SceneLoader(scene, root, download, scene_options),
            split,
            split_file,
            RouteOptions(
                band_route, num_components, pca_whiten, missing_bands, min_coverage, append_spectra
            ),
            wavelengths=wavelengths,
            owner=type(self).__name__,
            split_defaults=self._split_defaults,
        )
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.train_transform = train_transform
        # Albumentations run per sample in the loader; batch transforms on the device.
        self._sample_transform, self._batch_transforms = split_train_transform(train_transform)
        self.predict_dataset: Any = None

    # -- the scene and what the model config needs --------------------------------------------

    @property
    def band_route(self) -> BandRouteName:
        """The configured band route's name (a checkpoint's route may replace it)."""
        return self.scene_state.route_options.band_route

    @property
    def append_spectra(self) -> bool:
        """Whether the configured band route appends the scene's spectra."""
        return self.scene_state.route_options.append_spectra

    def prepare_data(self) -> None:
        """Download the scene's files when ``download`` is set (loading verifies them)."""
        if self.scene_state.loader.download:
            self.scene  # noqa: B018 - loading fetches and verifies missing files

    @property
    def scene(self) -> HyperspectralScene:
        """The loaded scene (its cube is read once and kept)."""
        return self.scene_state.scene

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
        if self.scene_state.checkpoint_class_names is not None:
            return list(self.scene_state.checkpoint_class_names)
        module = self.trainer.lightning_module if self.trainer is not None else None
        hparams = getattr(module, "hparams", None) or {}
        count = task_model_args(hparams).get("num_classes")
        return [f"class_{k}" for k in range(1, count + 1)] if _is_int(count) else []

    @property
    def num_bands(self) -> int:
        """Bands the encoder receives after the band route: set ``backbone_num_bands`` to it."""
        route = self.scene_state.fitted_route
        if route is not None:
            return route.num_routed
        options = self.scene_state.route_options
        return {"pca": options.num_components, "sentinel2": 12}.get(
            options.band_route, self.scene.num_bands
        )

    @property
    def num_spectra(self) -> int:
        """Bands appended after them for the spectral path (``append_spectra``; else 0): set
        ``model_args.spectral_path.bands`` to it."""
        route = self.scene_state.fitted_route
        if route is not None:
            return route.spectra
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
        # Drawing the split here changes nothing: a checkpoint's split, restored after setup,
        # still replaces it.
        if stage == "fit" and len(self.split.val) == 0:
            skip_validation(
                self.trainer,
                type(self).__name__,
                f"the split holds no validation pixels ({self.split.protocol}, "
                f"{_validation_setting(self.split)})",
            )
        if stage == "predict" and self.trainer is not None:
            check_prediction_writer(self.trainer, type(self).__name__)

    def _check_task(self, module: Any) -> None:
        """Compare the task's settings with the data."""
        check_task_kind(
            module,
            self.task_name,
            _DATAMODULE_OF_TASK,
            f"{type(self).__name__} makes batches for {self.task_name}, not for {{task}}; "
            "use {fits} with {task}.",
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
        check_model_args(model_args, expected, f"{self.scene.name}, band_route {self.band_route!r}")
        if "ignore_index" in hparams:
            self._check_ignore_index(hparams["ignore_index"])  # typed: a task init argument

    def _check_ignore_index(self, ignore_index: Any) -> None:
        """Raise a ValueError when the task's ``ignore_index`` does not fit the batches."""

    # -- split and band route -----------------------------------------------------------------

    @property
    def split(self) -> Split:
        """The train/val/test split: restored from a checkpoint, else loaded, else drawn.

        Unless the ``split`` config names one, it holds a validation share
        (:data:`~.scene_state.VALIDATION_SHARE`).
        """
        return self.scene_state.split

    def _split_defaults(self, protocol: str) -> dict[str, Any]:
        """Protocol parameters the datamodule fills in; subclasses add their own."""
        return {}

    def targets(self, pixels: np.ndarray) -> np.ndarray:
        """Class indices (raw label - 1) of flat pixel indices."""
        return self.scene.labels.reshape(-1)[pixels] - 1

    @property
    def route(self) -> BandRoute:
        """The fitted band route: restored from a checkpoint, or fitted on training pixels only."""
        return self.scene_state.route

    def routed_cube(self) -> torch.Tensor:
        """The whole scene through the band route: one (k, H, W) float32 tensor, built once.

        Laid out pixel-major in memory (:func:`~.windows.pixel_major`) for fast window gathers.
        """
        return self.scene_state.routed_cube()

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

    def _dataset(self, stage: str) -> Any:
        dataset = self._make_dataset(stage)
        if stage == "train" and self._sample_transform is not None:
            dataset = SampleTransformDataset(dataset, self._sample_transform)
        if stage == "predict":
            self.predict_dataset = dataset
        return dataset

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        """Batches around training pixels, reshuffled every epoch."""
        return batch_loader(self._dataset("train"), self.batch_size, self.num_workers, True)

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        """Batches around validation pixels (a fit skips validation when the split has none)."""
        return batch_loader(self._dataset("val"), self.batch_size, self.num_workers)

    def test_dataloader(self) -> torch.utils.data.DataLoader:
        """Batches around test pixels."""
        return batch_loader(self._dataset("test"), self.batch_size, self.num_workers)

    def predict_dataloader(self) -> torch.utils.data.DataLoader:
        """Batches covering every pixel of the scene, labelled or not."""
        return batch_loader(self._dataset("predict"), self.batch_size, self.num_workers)

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
        """The fitted band route, the class names and the split, saved in every checkpoint."""
        if not self.scene_state.resolved:
            return {}
        return self.scene_state.state_dict(self.class_names)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the band route and, for the same scene size, the split; they win over a refit.

        Raises:
            ValueError: the state is not one this datamodule writes (damaged or foreign).
        """
        self.scene_state.load_state_dict(state_dict)


def _validation_setting(split: Split) -> str:
    """The split parameter that sets its validation share, as a config would write it."""
    key = "val_fraction" if split.protocol == "spatially_disjoint" else "val_size"
    return f"{key}: {split.params.get(key)}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
