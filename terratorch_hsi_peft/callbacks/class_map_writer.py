"""Whole-scene class maps from ``terratorch predict``: GeoTIFF or .npy plus a colour PNG."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile

from terratorch_hsi_peft.terratorch_compat import remove_terratorch_writers
from terratorch_hsi_peft.utils.download import atomic_write

__all__ = ["ClassMapWriter", "class_colours", "write_class_map_png"]

logger = logging.getLogger(__name__)


class ClassMapWriter(BasePredictionWriter):
    """Assembles the predictions of a whole scene into one class map and writes it.

    Works with the plugin's datamodules (``HyperspectralPatchDataModule``: one prediction per
    pixel; ``HyperspectralSceneDataModule``: tiles stitched from their centres), whose predict
    dataloader covers every pixel of the scene, labelled or not. Predictions are pasted into an
    in-memory (H, W) map batch by batch; under DDP the processes' maps are gathered and merged.
    At the end of ``predict`` global rank zero writes, atomically:

    - ``<scene>_class_map.tif`` (single-band GeoTIFF with a colour table and class names as
      tags) or ``<scene>_class_map.npy``: raw labels 1..K (class index + 1), 0 where nothing was
      predicted; uint8 (uint16 beyond 254 classes). The scenes carry no georeference, so the
      GeoTIFF has none either.
    - ``<scene>_class_map.png``: the map in colour with a legend of class names.

    TerraTorch's ``build_lightning_cli`` always appends its ``CustomWriter`` to the trainer's
    callbacks (a YAML ``trainer.callbacks`` list does not replace it); on these batches it would
    fail (it needs ``predict_output_dir`` and a GeoTIFF ``filename`` per sample). With
    ``replace_terratorch_writer`` (the default) this writer removes it from the trainer when
    ``predict`` starts, so ``terratorch predict --config x.yaml --ckpt_path y.ckpt`` needs nothing
    else.

    Args:
        output_dir: folder for the files; default: ``--predict_output_dir`` when given, else
            ``<trainer.default_root_dir>/predictions``; a trainer without a folder of its own
            (``default_root_dir`` the working directory, as from a ``config_deploy.yaml``)
            predicting from ``--ckpt_path`` writes into that run's folder:
            ``<run>/predictions`` beside ``<run>/checkpoints/``.
        file_format: ``tif`` (GeoTIFF) or ``npy``.
        replace_terratorch_writer: remove TerraTorch's ``CustomWriter`` during ``predict``.
        dpi: resolution of the PNG.
    """

    def __init__(
        self,
        output_dir: str | None = None,
        file_format: Literal["tif", "npy"] = "tif",
        replace_terratorch_writer: bool = True,
        dpi: int = 150,
    ) -> None:
        super().__init__(write_interval="batch")
        if file_format not in ("tif", "npy"):
            raise ValueError(f"file_format={file_format!r}: use 'tif' (GeoTIFF) or 'npy'.")
        self.output_dir = output_dir
        self.file_format = file_format
        self.replace_terratorch_writer = replace_terratorch_writer
        self.dpi = dpi
        #: The (H, W) class indices of the last predict run (-1: not predicted).
        self.class_map: np.ndarray | None = None
        #: Paths written by the last predict run.
        self.written: list[Path] = []

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Check the datamodule and take TerraTorch's ``CustomWriter`` out of ``predict``."""
        super().setup(trainer, pl_module, stage)
        if stage != "predict":
            return
        if not hasattr(trainer.datamodule, "paste_predictions"):
            raise TypeError(
                "ClassMapWriter assembles maps from the plugin's HyperspectralPatchDataModule or "
                f"HyperspectralSceneDataModule; the datamodule is "
                f"{type(trainer.datamodule).__name__}. Use one of them or remove the callback."
            )
        if self.replace_terratorch_writer and remove_terratorch_writers(trainer):
            logger.info("ClassMapWriter: TerraTorch's CustomWriter is disabled for predict.")

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start an empty map of the scene's size."""
        self.class_map = np.full(trainer.datamodule.scene.shape, -1, dtype=np.int64)
        self.written = []

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: list[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        """Paste one batch of predicted class indices into the map."""
        predictions = _class_indices(prediction)
        if batch_indices is None:
            raise RuntimeError(
                "Lightning gave no batch indices; ClassMapWriter needs the datamodule's own "
                "predict dataloader (do not pass dataloaders to trainer.predict)."
            )
        trainer.datamodule.paste_predictions(self.class_map, list(batch_indices), predictions)

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Merge the processes' maps (under DDP each predicted its share of pixels) and write."""
        if trainer.world_size > 1:
            self.class_map = _merge_ranks(self.class_map, trainer, pl_module)
        if not trainer.is_global_zero:
            return
        datamodule = trainer.datamodule
        missing = int((self.class_map < 0).sum())
        if missing:
            warnings.warn(
                f"{missing} pixel(s) of the scene got no prediction (written as 0); run predict "
                "over the datamodule's full predict dataloader (no limit_predict_batches).",
                UserWarning,
                stacklevel=2,
            )
        folder = self.output_folder(trainer)
        stem = folder / f"{datamodule.scene.name}_class_map"
        names = list(datamodule.class_names)
        raw = (self.class_map + 1).astype(np.uint8 if len(names) < 255 else np.uint16)
        map_path = stem.with_suffix(f".{self.file_format}")
        if self.file_format == "tif":
            _write_geotiff(map_path, raw, names)
        else:
            with atomic_write(map_path) as f:
                np.save(f, raw)
        png_path = stem.with_suffix(".png")
        write_class_map_png(png_path, self.class_map, names, datamodule.scene.name, self.dpi)
        self.written = [map_path, png_path]
        rank_zero_info(f"ClassMapWriter: wrote {map_path} and {png_path.name}")

    def output_folder(self, trainer: Trainer) -> Path:
        """Where the maps go (see ``output_dir``)."""
        given = self.output_dir or getattr(trainer, "predict_output_dir", None)
        if given:
            return Path(given)
        root = Path(trainer.default_root_dir)
        if trainer.ckpt_path and root.resolve() == Path(os.getcwd()).resolve():
            # No folder of its own: the maps belong to the run whose checkpoint predicts.
            checkpoint = Path(trainer.ckpt_path)
            run = checkpoint.parent
            if run.name == "checkpoints":
                run = run.parent
            return run / "predictions"
        return root / "predictions"


def _merge_ranks(class_map: np.ndarray, trainer: Trainer, pl_module: LightningModule) -> np.ndarray:
    """Every process's map, merged: each pixel takes the class some process predicted for it.

    Unpredicted pixels are -1, so the maximum over processes keeps the prediction; a pixel that
    the sampler gave to two processes (padding) got the same class from the same weights.
    """
    local = torch.from_numpy(class_map).to(pl_module.device)  # NCCL gathers device tensors only
    gathered = trainer.strategy.all_gather(local)  # (world_size, H, W)
    return gathered.amax(dim=0).cpu().numpy()


def _class_indices(prediction: Any) -> torch.Tensor:
    """The class-index tensor inside what a stock task's ``predict_step`` returns.

    ClassificationTask: ``(indices, filenames)``; SemanticSegmentationTask: ``((indices, "pred"),
    filenames)``, or a list of ``(tensor, suffix)`` when ``output_on_inference`` is a list.
    """
    if isinstance(prediction, torch.Tensor):
        return prediction
    if isinstance(prediction, list):
        for tensor, suffix in prediction:
            if suffix == "pred":
                return tensor
    elif isinstance(prediction, tuple) and prediction:
        if len(prediction) == 2 and isinstance(prediction[1], str):
            if prediction[1] == "pred":
                return prediction[0]
        else:
            return _class_indices(prediction[0])
    raise ValueError(
        "ClassMapWriter needs predicted class indices; set the task's output_on_inference to "
        "'prediction' (the default) or include it in the list."
    )


def class_colours(num_classes: int) -> np.ndarray:
    """(K, 3) float RGB colours, distinct for up to 20 classes (tab20), then spread over hsv."""
    if num_classes <= 20:
        return np.asarray(colormaps["tab20"].colors)[:num_classes]
    return colormaps["hsv"](np.linspace(0, 1, num_classes, endpoint=False))[:, :3]


def write_class_map_png(
    path: Path, class_map: np.ndarray, class_names: list[str], title: str, dpi: int = 150
) -> None:
    """Write a colour PNG of ``class_map`` (class indices, -1 = none) with a legend, atomically."""
    colours = class_colours(len(class_names))
    rgb = np.ones((*class_map.shape, 3))
    predicted = class_map >= 0
    rgb[predicted] = colours[class_map[predicted]]
    height, width = class_map.shape
    scale = 6 / max(height, width)
    fig = Figure(figsize=(width * scale + 3, max(height * scale, 0.25 * len(class_names)) + 0.6))
    ax = fig.add_subplot()
    ax.imshow(rgb, interpolation="nearest")
    ax.set_title(title)
    ax.set_axis_off()
    handles = [Patch(color=c, label=n) for c, n in zip(colours, class_names, strict=True)]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=7)
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=dpi)


def _write_geotiff(path: Path, raw: np.ndarray, class_names: list[str]) -> None:
    colours = (class_colours(len(class_names)) * 255).round().astype(int)
    table = {0: (0, 0, 0, 0)}
    table.update({i + 1: (*map(int, c), 255) for i, c in enumerate(colours)})
    profile = {
        "driver": "GTiff",
        "height": raw.shape[0],
        "width": raw.shape[1],
        "count": 1,
        "dtype": raw.dtype.name,
        "nodata": 0,
        "compress": "deflate",
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # the scenes carry no georeference
        with MemoryFile() as memory:
            with memory.open(**profile) as dst:
                dst.write(raw, 1)
                if raw.dtype == np.uint8:  # a palette for the usual case of < 255 classes
                    dst.write_colormap(1, table)
                dst.update_tags(**{f"class_{i + 1}": n for i, n in enumerate(class_names)})
            data = memory.read()
    with atomic_write(path) as f:
        f.write(data)
