"""Class maps of sensor products, written block by block into a tiled, compressed GeoTIFF."""

from __future__ import annotations

import contextlib
import os
import uuid
import warnings
from collections import deque
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window as RasterWindow

from terratorch_hsi_peft.callbacks.class_map_writer import _class_indices, class_colours
from terratorch_hsi_peft.products.emit import emit_orthorectify
from terratorch_hsi_peft.terratorch_compat import remove_terratorch_writers

__all__ = ["GeoTiffMapWriter"]

#: Batch keys that say where predictions go (written by ProductMapDataModule); the writer takes
#: them out before the model runs.
MAP_KEYS = ("map_block", "map_origin", "map_owned", "map_blocks", "map_nodata")


class GeoTiffMapWriter(BasePredictionWriter):
    """Writes the class map of a product predicted by ``ProductMapDataModule``, block by block.

    Each block's predictions are held until all its samples are in, then written into
    ``<product>_class_map.tif``: a tiled (``block_size`` tiles), deflate-compressed GeoTIFF with
    the product's CRS and transform, raw labels 1..K (class index + 1), 0 (the nodata value) for
    unclassified pixels (the product's nodata), a colour table and the class names as tags. A
    swath with a geometry lookup table instead of a grid (EMIT L2A) also gets
    ``<product>_class_map_ortho.tif``, the class map on the lookup table's grid. With
    ``probabilities`` the class probabilities go into ``<product>_probabilities.tif`` (K bands).
    Only the blocks a batch reaches into are held in memory (a batch may end one block and start
    the next); ``trainer.predict`` returns nothing (Lightning would otherwise keep every batch's
    predictions to return them).

    Files are written under a temporary name in the target folder and renamed when the map is
    complete: an interrupted map leaves no file under the final name (and an interrupted run's
    temporary files are removed when Python can still run its handlers). Under DDP each rank
    writes its blocks into a temporary file of its own; global rank zero then copies them,
    block by block, into the map.

    Args:
        output_dir: folder for the files; default: ``--predict_output_dir`` when given, else
            ``<trainer.default_root_dir>/predictions``.
        probabilities: also write class probabilities: ``float32`` (nodata NaN) or ``uint8``
            (probability x 254, rounded; nodata 255). Needs a ``SemanticSegmentationTask`` with
            ``output_on_inference: [prediction, probabilities]``.
        replace_terratorch_writer: remove TerraTorch's ``CustomWriter`` during ``predict`` (the
            ``terratorch`` command always adds it, and it cannot write these batches).
    """

    def __init__(
        self,
        output_dir: str | None = None,
        probabilities: Literal["float32", "uint8"] | None = None,
        replace_terratorch_writer: bool = True,
    ) -> None:
        super().__init__(write_interval="batch")
        if probabilities not in (None, "float32", "uint8"):
            raise ValueError(f"probabilities={probabilities!r}: use null, 'float32' or 'uint8'.")
        self.output_dir = output_dir
        self.probabilities = probabilities
        self.replace_terratorch_writer = replace_terratorch_writer
        #: Files written by the last predict run (on global rank zero).
        self.written: list[Path] = []
        self._pending: deque[dict[str, torch.Tensor]] = deque()
        self._open_blocks: dict[int, dict[str, Any]] = {}
        self._outputs: dict[str, Any] = {}  # kind -> open rasterio dataset
        self._temp: dict[str, Path] = {}  # kind -> the temporary file this process writes

    # -- hooks ----------------------------------------------------------------------------------

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Check the datamodule and take TerraTorch's ``CustomWriter`` out of ``predict``."""
        super().setup(trainer, pl_module, stage)
        if stage != "predict":
            return
        if not hasattr(trainer.datamodule, "blocks_of_rank"):
            raise TypeError(
                "GeoTiffMapWriter writes the maps of ProductMapDataModule; the datamodule is "
                f"{type(trainer.datamodule).__name__} (use ClassMapWriter with it)."
            )
        if self.replace_terratorch_writer:
            remove_terratorch_writers(trainer)
        # Lightning (and so the terratorch command) would also keep every batch's predictions
        # in memory to return them: a whole product's worth. The map on disk is the output.
        trainer.predict_loop.return_predictions = False

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Open this process's temporary GeoTIFF(s) on the product's grid."""
        dm = trainer.datamodule
        folder = Path(
            self.output_dir
            or getattr(trainer, "predict_output_dir", None)
            or Path(trainer.default_root_dir) / "predictions"
        )
        folder.mkdir(parents=True, exist_ok=True)
        token = trainer.strategy.broadcast(uuid.uuid4().hex[:12])  # one name for all ranks
        self._final = {"class_map": folder / f"{dm.name}_class_map.tif"}
        if self.probabilities:
            self._final["probabilities"] = folder / f"{dm.name}_probabilities.tif"
        self._token = token
        self._class_names = dm.class_names
        self._pending.clear()
        self._open_blocks = {}
        self.written = []
        rank = trainer.global_rank
        self._temp = {kind: self._rank_file(path, rank) for kind, path in self._final.items()}
        for kind, path in self._temp.items():
            self._outputs[kind] = _open_geotiff(path, self._profile(dm, kind), sparse=True)
        # GDAL takes the colour table only before the first pixels are written.
        _add_legend(self._outputs["class_map"], self._class_names)

    def on_predict_batch_start(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Take the batch's placement out before the model sees the batch (the stock tasks pass
        every key but the image to the model)."""
        self._pending.append({key: batch.pop(key) for key in MAP_KEYS})

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        """Paste one batch into its blocks; write a block once all its samples are in."""
        place = {k: v.cpu() for k, v in self._pending.popleft().items()}
        flat_nodata = place["map_nodata"].numpy()
        offset = 0
        for index, count, row, col, height, width in place["map_blocks"].tolist():
            nodata = flat_nodata[offset : offset + height * width].reshape(height, width)
            offset += height * width
            block = {"row": row, "col": col, "done": 0, "count": count, "nodata": nodata}
            block["class_map"] = np.full(nodata.shape, -1, dtype=np.int64)
            if self.probabilities:
                block["probabilities"] = None  # K is known from the first batch
            self._open_blocks[index] = block
        classes = _class_indices(prediction).cpu()
        probabilities = _probabilities(prediction).float().cpu() if self.probabilities else None
        sample_blocks = place["map_block"]
        # A batch holds the end of one block and the start of the next (or more, for small ones).
        for index in torch.unique(sample_blocks).tolist():
            mine = sample_blocks == index
            block = self._open_blocks[index]
            part = {"map_origin": place["map_origin"][mine], "map_owned": place["map_owned"][mine]}
            _paste(block["class_map"], classes[mine], part, block["row"], block["col"])
            if probabilities is not None:
                if block["probabilities"] is None:
                    block["probabilities"] = np.full(
                        (probabilities.shape[1], *block["nodata"].shape), np.nan, np.float32
                    )
                _paste(
                    block["probabilities"], probabilities[mine], part, block["row"], block["col"]
                )
            block["done"] += int(mine.sum())
            if block["done"] == block["count"]:
                self._write_block(self._open_blocks.pop(index))

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Write unfinished blocks, then (rank zero) assemble the ranks' files and rename."""
        if self._open_blocks:
            warnings.warn(
                f"{len(self._open_blocks)} block(s) of the map got only part of their "
                "predictions (their other pixels are written unclassified); run predict over the "
                "whole predict dataloader (no limit_predict_batches).",
                UserWarning,
                stacklevel=2,
            )
            for block in self._open_blocks.values():
                self._write_block(block)
            self._open_blocks = {}
        dm = trainer.datamodule
        self._close_outputs()
        if trainer.world_size > 1:
            trainer.strategy.barrier("GeoTiffMapWriter: every rank wrote its blocks")
            if trainer.is_global_zero:
                self._assemble(dm, trainer.world_size)
            trainer.strategy.barrier("GeoTiffMapWriter: the map is assembled")
            if not trainer.is_global_zero:
                self._temp = {}
                return
        for kind, final in self._final.items():
            os.replace(self._temp[kind], final)
            self.written.append(final)
        self._temp = {}
        ortho = self._write_ortho(dm)
        if ortho is not None:
            self.written.append(ortho)
        print(f"Map of {dm.name} written: {', '.join(str(p) for p in self.written)}")

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: Any) -> None:
        """Remove this process's temporary files: no half-written map is left behind."""
        self._close_outputs()
        for path in self._temp.values():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self._temp = {}

    # -- files ----------------------------------------------------------------------------------

    def _rank_file(self, final: Path, rank: int) -> Path:
        return final.with_name(f".{final.name}.{self._token}.rank{rank}.part")

    def _profile(self, dm: Any, kind: str) -> dict[str, Any]:
        height, width = dm.shape
        meta = dm.product.metadata
        names = dm.class_names
        if kind == "class_map":
            dtype, count = ("uint8" if len(names) < 255 else "uint16"), 1
            nodata: float = 0
        else:
            dtype, count = self.probabilities, len(names)
            nodata = float("nan") if dtype == "float32" else 255
        return {
            "driver": "GTiff",
            "height": height,
            "width": width,
            "count": count,
            "dtype": dtype,
            "nodata": nodata,
            "crs": meta.crs,
            "transform": meta.transform,
            "tiled": True,
            "blockxsize": dm.block_size,
            "blockysize": dm.block_size,
            "compress": "deflate",
            "BIGTIFF": "IF_SAFER",
        }

    def _write_block(self, block: dict[str, Any]) -> None:
        nodata = block["nodata"]
        height, width = nodata.shape
        window = RasterWindow(block["col"], block["row"], width, height)
        out = self._outputs["class_map"]
        raw = np.where(nodata | (block["class_map"] < 0), 0, block["class_map"] + 1)
        out.write(raw.astype(out.dtypes[0])[None], window=window)
        if self.probabilities:
            probs = block["probabilities"]
            if probs is None:
                probs = np.full((out.count, height, width), np.nan, np.float32)
            probs = np.where(nodata[None], np.nan, probs)
            target = self._outputs["probabilities"]
            if self.probabilities == "uint8":
                probs = np.where(np.isnan(probs), 255, np.round(np.nan_to_num(probs) * 254))
            target.write(probs.astype(target.dtypes[0]), window=window)

    def _write_ortho(self, dm: Any) -> Path | None:
        """For a swath without a map grid but with a geometry lookup table (EMIT L2A), the class
        map on the GLT's grid too: ``<product>_class_map_ortho.tif``, in the GLT's CRS and
        transform (cells no swath pixel maps to are 0, nodata). The swath map is one byte per
        pixel, read back whole; written under a temporary name and renamed, as the map."""
        meta = dm.product.metadata
        extra = meta.extra or {}
        if meta.transform is not None or not {"glt_x", "glt_y", "ortho_transform"} <= set(extra):
            return None
        swath_path = self._final["class_map"]
        with rasterio.open(swath_path) as swath:
            class_map = swath.read(1)
        ortho = emit_orthorectify(class_map, extra["glt_x"], extra["glt_y"], fill=0)
        final = swath_path.with_name(f"{swath_path.stem}_ortho.tif")
        temp = final.with_name(f".{final.name}.{self._token}.part")
        # The map's own profile (dtype, nodata, tiling, compression) on the GLT's grid.
        profile = {
            **self._profile(dm, "class_map"),
            "height": ortho.shape[0],
            "width": ortho.shape[1],
            "crs": extra.get("ortho_crs"),
            "transform": extra["ortho_transform"],
        }
        try:
            with rasterio.open(temp, "w", **profile) as out:
                _add_legend(out, self._class_names)
                out.write(ortho[None])
            os.replace(temp, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
        return final

    def _assemble(self, dm: Any, world: int) -> None:
        """Copy every rank's blocks into rank zero's file, one block at a time."""
        for kind in self._final:
            ranks = [self._rank_file(self._final[kind], r) for r in range(world)]
            target = _open_geotiff(ranks[0], None, sparse=True)
            try:
                for rank, blocks in enumerate(dm.rank_blocks(world)):
                    if rank == 0:
                        continue
                    with rasterio.open(ranks[rank]) as part:
                        for index in blocks:
                            owned = dm.block(index).owned
                            window = RasterWindow(owned.col, owned.row, owned.width, owned.height)
                            target.write(part.read(window=window), window=window)
            finally:
                target.close()
            for path in ranks[1:]:
                path.unlink()
        self._temp = {kind: self._rank_file(path, 0) for kind, path in self._final.items()}

    def _close_outputs(self) -> None:
        for dataset in self._outputs.values():
            dataset.close()
        self._outputs = {}


def _open_geotiff(path: Path, profile: dict[str, Any] | None, sparse: bool) -> Any:
    """Open a GeoTIFF to write (``profile``) or to update (``None``); blocks never written stay
    absent from the file (``SPARSE_OK``), so a rank's file holds only its own blocks."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # swaths carry no transform
        if profile is None:
            return rasterio.open(path, "r+")
        return rasterio.open(path, "w", SPARSE_OK=sparse, **profile)


def _add_legend(dataset: Any, names: list[str]) -> None:
    colours = (class_colours(len(names)) * 255).round().astype(int)
    if dataset.dtypes[0] == "uint8":
        table = {0: (0, 0, 0, 0)}
        table.update({i + 1: (*map(int, c), 255) for i, c in enumerate(colours)})
        dataset.write_colormap(1, table)
    dataset.update_tags(**{f"class_{i + 1}": n for i, n in enumerate(names)})


def _paste(
    target: np.ndarray, values: torch.Tensor, place: dict[str, torch.Tensor], row: int, col: int
) -> None:
    """Write each sample's owned pixels of ``values`` into a block's ``target`` (..., h, w).

    ``values``: (B,) or (B, K) per pixel (classification: one pixel per sample), or (B, t, t)
    or (B, K, t, t) per tile.
    """
    owned = place["map_owned"].numpy()
    values = values.numpy()
    if values.ndim == target.ndim - 1:  # one pixel per sample
        rows, cols = owned[:, 0] - row, owned[:, 2] - col
        if values.ndim == 1:
            target[rows, cols] = values
        else:
            target[:, rows, cols] = values.T
        return
    origins = place["map_origin"].numpy()
    for value, (top, left), (r0, r1, c0, c1) in zip(values, origins, owned, strict=True):
        target[..., r0 - row : r1 - row, c0 - col : c1 - col] = value[
            ..., r0 - top : r1 - top, c0 - left : c1 - left
        ]


def _probabilities(prediction: Any) -> torch.Tensor:
    """The class probabilities in a SemanticSegmentationTask's list of outputs."""
    if isinstance(prediction, tuple) and prediction and isinstance(prediction[0], list):
        prediction = prediction[0]
    if isinstance(prediction, list):
        for tensor, suffix in prediction:
            if suffix == "probabilities":
                return tensor
    raise ValueError(
        "GeoTiffMapWriter(probabilities=...) needs the class probabilities: give the "
        "SemanticSegmentationTask output_on_inference: [prediction, probabilities] "
        "(ClassificationTask's predict outputs only classes: set probabilities: null)."
    )
