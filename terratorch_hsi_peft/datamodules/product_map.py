"""Mapping a sensor product larger than memory: windows read from disk, predicted block by block.

The product's grid is cut into ``block_size x block_size`` blocks. For each block the pixels the
model needs (the block plus the halo its tiles or patches reach into) are read from disk in one
window, sent through the band route restored from the training checkpoint, and cut into tiles
(segmentation) or pixel patches (classification) exactly as the in-memory datamodules cut them
from a whole scene, so the map is the same as theirs. Nothing but one window per loader process
is held at a time. :class:`~terratorch_hsi_peft.callbacks.GeoTiffMapWriter` writes each block's
predictions into a tiled GeoTIFF as soon as the block is complete.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningDataModule

from terratorch_hsi_peft.callbacks.geotiff_map_writer import MAP_KEYS
from terratorch_hsi_peft.datamodules.checks import check_task_kind
from terratorch_hsi_peft.datamodules.loaders import Interpolation, resize_windows
from terratorch_hsi_peft.datamodules.scene import tile_grid
from terratorch_hsi_peft.datamodules.windows import gather_windows, pixel_major
from terratorch_hsi_peft.products.base import SensorProduct, Window
from terratorch_hsi_peft.transforms import BandRoute
from terratorch_hsi_peft.utils.cli_values import task_model_args

__all__ = [
    "MAP_KEYS",
    "BlockGrid",
    "MapBlock",
    "ProductMapDataModule",
    "ProductWindowDataset",
    "auto_block_size",
]

logger = logging.getLogger(__name__)

#: GDAL's block cache while a product is read window by window (MB).
GDAL_CACHE_MB = 64
#: A block's window is read and routed in strips of about this many MB of float32.
READ_STRIP_MB = 16
#: With ``block_size: null``, blocks are as large as :data:`MAX_BLOCK_SIZE` allows while a
#: block's routed window (every band the route outputs, float32, halo included) stays within
#: this many MB: the window is held whole while its samples are cut, so its size, not the
#: product's, sets the memory a map adds.
WINDOW_MB = 32
#: The largest automatic block side (pixels; GeoTIFF tiles beyond this gain nothing).
MAX_BLOCK_SIZE = 512

#: The training datamodule whose checkpoint state holds each formulation's band route.
_TRAINED_WITH = {
    "segmentation": "HyperspectralSceneDataModule",
    "classification": "HyperspectralPatchDataModule",
}
_TASK_OF = {
    "segmentation": "SemanticSegmentationTask",
    "classification": "ClassificationTask",
}


@dataclass(frozen=True)
class MapBlock:
    """One block of the map: the pixels it owns and the window read from disk to predict them.

    Attributes:
        index: the block's number (row-major over the block grid).
        owned: the pixels written from this block's predictions.
        read: the window read from disk (``owned`` plus the halo, clipped to the product).
        pad: reflect padding (top, bottom, left, right) added to ``read`` where the halo leaves
            the product, as the in-memory datamodules pad the whole scene.
        origins: (N, 2) scene row/column of each sample's top-left pixel (of its tile or patch).
        owned_by_sample: (N, 4) scene rows ``r0..r1`` and columns ``c0..c1`` each sample's
            prediction is written to (inside ``owned``).
    """

    index: int
    owned: Window
    read: Window
    pad: tuple[int, int, int, int]
    origins: np.ndarray
    owned_by_sample: np.ndarray


@dataclass(frozen=True)
class BlockGrid:
    """The blocks a product is cut into and the samples (tiles or patches) of each.

    Blocks are built when asked for (:meth:`block`): a block's sample arrays are 48 bytes a
    sample, a whole product's a patch per pixel, so holding every block up front would grow
    with the product (800 MB at 16 Mpx for the classification route).
    """

    height: int
    width: int
    block_size: int
    formulation: str
    tile_size: int
    inference_stride: int
    patch_size: int

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the product."""
        return self.height, self.width

    def num_blocks(self) -> int:
        """How many blocks the product is cut into."""
        return math.ceil(self.height / self.block_size) * math.ceil(self.width / self.block_size)

    def num_samples(self, index: int) -> int:
        """The number of samples of block ``index`` (without building their arrays)."""
        rows, cols = self._axes(self._owned(index))
        return len(rows[0]) * len(cols[0])

    def _owned(self, index: int) -> Window:
        per_row = math.ceil(self.width / self.block_size)
        r0, c0 = (index // per_row) * self.block_size, (index % per_row) * self.block_size
        size = self.block_size
        return Window(r0, c0, min(size, self.height - r0), min(size, self.width - c0))

    def _axes(self, owned: Window) -> tuple[tuple, tuple]:
        axis = self._tile_axis if self.formulation == "segmentation" else self._patch_axis
        return axis(self.height, owned.row, owned.height), axis(self.width, owned.col, owned.width)

    def block(self, index: int) -> MapBlock:
        """Block ``index`` with the window it reads and its samples."""
        owned = self._owned(index)
        rows, cols = self._axes(owned)
        (r_starts, r_own, r_read, r_pad), (c_starts, c_own, c_read, c_pad) = rows, cols
        i, j = np.meshgrid(np.arange(len(r_starts)), np.arange(len(c_starts)), indexing="ij")
        i, j = i.ravel(), j.ravel()
        return MapBlock(
            index=index,
            owned=owned,
            read=Window(r_read[0], c_read[0], r_read[1] - r_read[0], c_read[1] - c_read[0]),
            pad=(*r_pad, *c_pad),
            origins=np.stack([r_starts[i], c_starts[j]], axis=1),
            owned_by_sample=np.stack([r_own[i, 0], r_own[i, 1], c_own[j, 0], c_own[j, 1]], axis=1),
        )

    def _tile_axis(self, length: int, start: int, size: int):
        """Tiles of the global grid whose owned pixels meet ``start..start + size`` on one axis.

        The grid is the in-memory datamodule's (over the axis padded up to one tile), so each
        pixel is predicted by the same tile as there.
        """
        t = self.tile_size
        padded = max(length, t)
        if padded - length >= length:
            raise ValueError(
                f"tile_size={t} is more than twice the product's size {self.shape}; lower it."
            )
        starts, lo, hi = tile_grid(padded, t, self.inference_stride)
        own_lo = np.maximum(starts + lo, start)
        own_hi = np.minimum(starts + hi, start + size)
        keep = own_lo < own_hi
        starts, own = starts[keep], np.stack([own_lo[keep], own_hi[keep]], axis=1)
        read_lo, read_hi = int(starts.min()), int(starts.max()) + t
        pad = (0, max(read_hi - length, 0))
        return starts, own, (read_lo, min(read_hi, length)), pad

    def _patch_axis(self, length: int, start: int, size: int):
        """Every pixel of ``start..start + size`` on one axis, with the patch radius around it
        (reflect-padded where it leaves the product, as the patch datamodule pads the scene)."""
        radius = self.patch_size // 2
        if radius >= length:
            raise ValueError(
                f"patch_size={self.patch_size} needs a product larger than {radius} pixels on "
                f"each side (reflect padding); it is {self.shape}."
            )
        centres = np.arange(start, start + size)
        own = np.stack([centres, centres + 1], axis=1)
        read_lo, read_hi = start - radius, start + size + radius
        pad = (max(-read_lo, 0), max(read_hi - length, 0))
        return centres - radius, own, (max(read_lo, 0), min(read_hi, length)), pad


class ProductWindowDataset(torch.utils.data.IterableDataset):
    """Full batches over one rank's blocks, each block read from disk once (one window at a time).

    Samples are taken block after block and batched across blocks, so every batch but the last
    of a loader process holds ``batch_size`` samples (the in-memory datamodules' batches are full
    too; a partial batch per block would mean more, smaller model calls).

    Yields dicts with ``image`` (B, k, s, s) and the :data:`MAP_KEYS`: ``map_block`` (B,) the
    block each sample belongs to; ``map_origin`` (B, 2) each sample's top-left scene pixel;
    ``map_owned`` (B, 4) the scene pixels each prediction fills; ``map_blocks`` (n, 6) the
    blocks whose first samples are in this batch (index, sample count, owned row, column,
    height, width) and ``map_nodata`` their nodata masks over the owned windows, flattened and
    concatenated (bool).

    Args:
        open_product: a picklable callable returning the opened product (called in each loader
            worker, as file handles are not shared between processes).
        close: close the product at the end of each pass (``False`` for a product the caller
            opened and keeps).
        grid: the product's block grid.
        blocks: the block numbers of this rank, in order (each built when read).
        size: the side of a sample (tile or patch) in pixels.
        route: the fitted band route.
        bands: 0-based product bands the route reads.
        batch_size: samples per batch at most.
        num_workers: the loader processes sharing the blocks (for the batch count only).
    """

    def __init__(
        self,
        open_product: Callable[[], SensorProduct],
        grid: BlockGrid,
        blocks: range | list[int],
        size: int,
        route: BandRoute,
        bands: np.ndarray,
        batch_size: int,
        close: bool = True,
        num_workers: int = 0,
    ) -> None:
        self.open_product = open_product
        self.close = close
        self.grid = grid
        self.blocks = list(blocks)
        self.size = size
        self.route = route
        self.bands = np.asarray(bands, dtype=np.int64)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self._offsets = torch.arange(size)

    def __len__(self) -> int:
        shares = max(self.num_workers, 1)
        return sum(
            math.ceil(sum(map(self.grid.num_samples, self.blocks[w::shares])) / self.batch_size)
            for w in range(shares)
        )

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        mine = self.blocks if info is None else self.blocks[info.id :: info.num_workers]
        # Each window is read once, so GDAL's block cache (5% of the RAM by default) would only
        # fill up with pixels never read again: peak memory would grow with the product.
        # rasterio passes GDAL_CACHEMAX to GDALSetCacheMax64 as bytes: 64 alone would be 64 bytes.
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 2**20):
            product = self.open_product()
            try:
                yield from self._batches(product, mine)
            finally:
                if self.close:
                    product.close()

    def read_block(self, product: SensorProduct, block: MapBlock) -> tuple[torch.Tensor, Any]:
        """The block's routed window, pixel-major (k, h, w), and its nodata mask over ``owned``.

        The window is read and routed in strips of about :data:`READ_STRIP_MB` of float32 (all
        the product's bands of a 544-pixel-wide window are 0.5 MB a row): only the routed
        bands of the whole window are held at once.

        A pixel is nodata when any band the route reads is NaN there (the product's nodata
        value); its values are replaced by the training mean, which the route maps to zero, so
        that tiles around it see no NaN.
        """
        window = block.read
        per_row = len(self.bands) * window.width * 4
        step = max(1, READ_STRIP_MB * 2**20 // per_row)
        routed_strips, nodata_strips = [], []
        for top in range(window.row, window.row + window.height, step):
            rows = min(step, window.row + window.height - top)
            strip = Window(top, window.col, rows, window.width)
            raw = torch.from_numpy(product.read(strip, self.bands))
            missing = torch.isnan(raw)
            nodata_strips.append(missing.any(dim=0))
            if nodata_strips[-1].any():
                mean = self.route.mean.to(raw.dtype)[:, None, None].expand_as(raw)
                raw = torch.where(missing, mean, raw)
            del missing
            routed_strips.append(self.route(raw))
            del raw
        routed = torch.cat(routed_strips, dim=1)
        nodata = torch.cat(nodata_strips, dim=0)
        del routed_strips
        top, bottom, left, right = block.pad
        if any(block.pad):
            routed = F.pad(routed[None], (left, right, top, bottom), mode="reflect")[0]
        r0 = block.owned.row - window.row
        c0 = block.owned.col - window.col
        owned_nodata = nodata[r0 : r0 + block.owned.height, c0 : c0 + block.owned.width]
        return pixel_major(routed), owned_nodata

    def _batches(
        self, product: SensorProduct, blocks: list[int]
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Fill batches block after block; a block's window is freed once its samples are cut."""
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("image", *MAP_KEYS)}
        filled = 0
        for index in blocks:
            block = self.grid.block(index)
            cube, nodata = self.read_block(product, block)
            owned = block.owned
            parts["map_blocks"].append(
                torch.tensor(
                    [[block.index, len(block.origins), owned.row, owned.col, *nodata.shape]]
                )
            )
            parts["map_nodata"].append(nodata.reshape(-1))
            # Scene pixel (row, col) sits at (row - top, col - left) of the padded window.
            top = block.read.row - block.pad[0]
            left = block.read.col - block.pad[2]
            origins = torch.as_tensor(block.origins, dtype=torch.int64)
            owned_by_sample = torch.as_tensor(block.owned_by_sample, dtype=torch.int64)
            start = 0
            while start < len(origins):
                part = slice(start, start + self.batch_size - filled)
                rows = (origins[part, 0] - top)[:, None] + self._offsets
                cols = (origins[part, 1] - left)[:, None] + self._offsets
                parts["image"].append(gather_windows(cube, rows, cols))
                parts["map_origin"].append(origins[part])
                parts["map_owned"].append(owned_by_sample[part])
                parts["map_block"].append(torch.full((len(rows),), block.index))
                filled += len(rows)
                start += len(rows)
                if filled == self.batch_size:
                    yield _join(parts)
                    filled = 0
            del cube, block, origins, owned_by_sample  # before the next window is read
        if filled:
            yield _join(parts)


def _join(parts: dict[str, list[torch.Tensor]]) -> dict[str, torch.Tensor]:
    """One batch from the parts gathered so far (emptied for the next batch)."""
    batch = {}
    for key, tensors in parts.items():
        if not tensors:  # no block starts in this batch
            tensors.append(
                torch.zeros((0, 6), dtype=torch.int64)
                if key == "map_blocks"
                else torch.zeros(0, dtype=torch.bool)
            )
        batch[key] = tensors[0] if len(tensors) == 1 else torch.cat(tensors)
        tensors.clear()
    return batch


class ProductMapDataModule(LightningDataModule):
    """Predict a sensor product on disk block by block, with a checkpoint's band route.

    ``predict`` only: pair it with :class:`~terratorch_hsi_peft.callbacks.GeoTiffMapWriter` and
    the checkpoint of a run trained with ``HyperspectralSceneDataModule`` (``segmentation``) or
    ``HyperspectralPatchDataModule`` (``classification``): ``terratorch predict --config x.yaml
    --ckpt_path y.ckpt``. The band route (and the class names) are restored from the
    checkpoint's datamodule state; tiles and patches are cut as those datamodules cut them (same
    tile grid, same reflect padding at the product's edges), so the map equals theirs, but only
    one window of ``block_size`` pixels plus the halo is read and held at a time. Under DDP each
    rank predicts its own blocks.

    Pixels that are nodata in any band the route reads are left unclassified.

    Args:
        product: path of the product (a file or a folder); :meth:`from_product` takes an opened
            ``SensorProduct`` instead.
        reader: dotted path of the ``SensorProduct`` class (or opening function) that opens it;
            default: ``terratorch_hsi_peft.products.open_product`` (the format found from the
            path).
        reader_options: more arguments for the reader.
        formulation: ``segmentation`` (tiles, for ``SemanticSegmentationTask``) or
            ``classification`` (a patch per pixel, for ``ClassificationTask``).
        block_size: side of the blocks the product is read and written in (a multiple of 16, the
            GeoTIFF's tile size). ``None``: the largest multiple of 16 up to 512 whose routed
            window (halo included) holds at most :data:`WINDOW_MB` MB, from the checkpoint's
            band route: 512 for a 12-band route, 176 when 224 appended spectra follow (a
            spectral path). A block's routed window is held whole, so it sets the memory.
        tile_size, inference_stride: the tiles (segmentation), as in
            ``HyperspectralSceneDataModule`` (the training run's ``tile_size``).
        patch_size, img_size, interpolation: the patches (classification), as in
            ``HyperspectralPatchDataModule``.
        bands: the product's bands the route reads: ``good`` (those not marked bad), ``all``, or
            ``auto`` (whichever has as many bands as the route was fitted on, ``good`` first).
        batch_size: samples per batch.
        num_workers: loader processes (each reads its own blocks).
    """

    def __init__(
        self,
        product: str,
        reader: str | None = None,
        reader_options: dict[str, Any] | None = None,
        formulation: Literal["segmentation", "classification"] = "segmentation",
        block_size: int | None = None,
        tile_size: int = 32,
        inference_stride: int | None = None,
        patch_size: int = 9,
        img_size: int = 32,
        interpolation: Interpolation = "bilinear",
        bands: Literal["auto", "good", "all"] = "auto",
        batch_size: int = 64,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if formulation not in _TASK_OF:
            raise ValueError(
                f"formulation={formulation!r}: use 'segmentation' (tiles) or 'classification' "
                "(a patch per pixel), the formulation the checkpoint was trained in."
            )
        if block_size is not None and (block_size < 16 or block_size % 16):
            raise ValueError(
                f"block_size={block_size} must be a positive multiple of 16 (GeoTIFF tiles)."
            )
        if patch_size < 1 or patch_size % 2 == 0:
            raise ValueError(f"patch_size={patch_size} must be odd and >= 1 (a centred window).")
        stride = inference_stride or max(tile_size // 2, 1)
        if tile_size < 1 or not 1 <= stride <= tile_size:
            raise ValueError(
                f"tile_size={tile_size} must be >= 1 and inference_stride={stride} in 1..tile_size."
            )
        if bands not in ("auto", "good", "all"):
            raise ValueError(f"bands={bands!r}: use 'auto', 'good' or 'all'.")
        if batch_size < 1 or num_workers < 0:
            raise ValueError(f"batch_size={batch_size} must be >= 1, num_workers >= 0.")
        self.product_path: str | None = str(product)
        self._product: SensorProduct | None = None
        self.reader = reader
        self.reader_options = dict(reader_options or {})
        self.formulation = formulation
        self._block_size = block_size
        self.tile_size = tile_size
        self.inference_stride = stride
        self.patch_size = patch_size
        self.img_size = img_size
        self.interpolation = interpolation
        self.bands = bands
        self.batch_size = batch_size
        self.num_workers = num_workers
        self._route: BandRoute | None = None
        self._class_names: list[str] | None = None
        self.predict_dataset: ProductWindowDataset | None = None

    @classmethod
    def from_product(cls, product: SensorProduct, **kwargs: Any) -> ProductMapDataModule:
        """A datamodule mapping an already opened product (the caller keeps it open)."""
        dm = cls(str(product.path), **kwargs)
        dm.product_path, dm._product = None, product
        return dm

    # -- the product ----------------------------------------------------------------------------

    def open_product(self) -> SensorProduct:
        """A newly opened product (its metadata only; pixels are read window by window)."""
        if self._product is not None:
            return self._product
        return _open(self.reader, self.product_path, self.reader_options)

    @property
    def product(self) -> SensorProduct:
        """The product, opened once in this process (for its metadata)."""
        if self._product is None:
            self._product = self.open_product()
        return self._product

    @property
    def name(self) -> str:
        """The map's name: the product's file or folder name without its extension."""
        return Path(self.product.path).stem

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the product's grid."""
        m = self.product.metadata
        return m.height, m.width

    @property
    def class_names(self) -> list[str]:
        """The classes of the checkpoint the product is mapped with."""
        if self._class_names is None:
            raise RuntimeError("No checkpoint state was restored yet: predict with --ckpt_path.")
        return list(self._class_names)

    @property
    def route(self) -> BandRoute:
        """The band route restored from the checkpoint."""
        if self._route is None:
            self._restore_from_checkpoint()
        return self._route

    def route_bands(self) -> np.ndarray:
        """0-based product bands the route reads (``bands``), checked against the route."""
        meta = self.product.metadata
        good, every = meta.good_bands, np.arange(meta.bands)
        need = self.route.num_bands_in
        options = {"good": [good], "all": [every], "auto": [good, every]}[self.bands]
        for chosen in options:
            if len(chosen) == need:
                return chosen
        raise ValueError(
            f"The checkpoint's band route reads {need} bands, but {self.product.path} has "
            f"{meta.bands} bands ({len(good)} not marked bad; bands: {self.bands!r}). Map the "
            "product with a model trained on the same sensor (and the same bad-band handling)."
        )

    # -- checkpoint state -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The restored band route and class names (the state the training datamodules save)."""
        if self._route is None:
            return {}
        return {
            "band_route": self._route.state_dict(),
            "class_names": json.dumps(self._class_names),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Take the band route and class names from a training datamodule's state.

        Raises:
            ValueError: a state without a band route.
        """
        if not state_dict:
            return
        try:
            self._route = BandRoute.from_state_dict(state_dict["band_route"])
            self._class_names = json.loads(state_dict.get("class_names", "null"))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"The checkpoint's datamodule state holds no band route ({type(err).__name__}: "
                f"{err}); use the checkpoint of a run trained with "
                f"{_TRAINED_WITH[self.formulation]}."
            ) from err

    def _restore_from_checkpoint(self) -> None:
        """Read the training datamodule's state from ``--ckpt_path`` (Lightning restores a
        datamodule's state only into the class that saved it)."""
        trained_with = _TRAINED_WITH[self.formulation]
        ckpt_path = getattr(self.trainer, "ckpt_path", None) if self.trainer else None
        if ckpt_path is None:
            raise ValueError(
                f"ProductMapDataModule maps a product with a trained model's band route: predict "
                f"with --ckpt_path set to the checkpoint of a run trained with {trained_with}."
            )
        try:
            checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # a checkpoint not in torch's zip format cannot be memory-mapped
            checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        states = [checkpoint[trained_with]] if trained_with in checkpoint else []
        states += [v for k, v in checkpoint.items() if isinstance(v, dict) and "band_route" in v]
        if not states:
            raise ValueError(
                f"{ckpt_path} holds no datamodule state with a band route: use the checkpoint of "
                f"a run trained with {trained_with} (formulation {self.formulation!r})."
            )
        self.load_state_dict(states[0])

    # -- Lightning --------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        """Check the stage and the task's kind; open the product's metadata.

        Raises:
            ValueError: a stage other than ``predict``, or the task of the other formulation.
        """
        if stage != "predict":
            raise ValueError(
                f"ProductMapDataModule only predicts (stage {stage!r}); train with "
                f"{_TRAINED_WITH[self.formulation]}."
            )
        self.product  # noqa: B018 - opening reads the metadata, so a wrong path fails here
        module = self.trainer.lightning_module if self.trainer is not None else None
        if module is not None:
            expected = _TASK_OF[self.formulation]
            check_task_kind(
                module,
                expected,
                {task: formulation for formulation, task in _TASK_OF.items()},
                f"formulation {self.formulation!r} makes batches for {expected}, the task is "
                "{task}: set formulation: {fits}.",
            )
        if self.trainer is not None:
            # Imported here: the writer pulls in rasterio, needed only to predict.
            from terratorch_hsi_peft.callbacks.geotiff_map_writer import GeoTiffMapWriter

            if not any(isinstance(cb, GeoTiffMapWriter) for cb in self.trainer.callbacks):
                raise ValueError(
                    "ProductMapDataModule's batches say where each prediction goes, which only "
                    "GeoTiffMapWriter reads; add to trainer.callbacks:\n"
                    "  - class_path: terratorch_hsi_peft.callbacks.GeoTiffMapWriter"
                )

    def _check_task_bands(self) -> None:
        module = self.trainer.lightning_module if self.trainer is not None else None
        given = task_model_args(getattr(module, "hparams", None)).get("backbone_num_bands")
        # The encoder reads the routed bands; appended spectra (if any) go to the spectral path.
        if given is not None and given != self.route.num_routed:
            raise ValueError(
                f"The task's model_args.backbone_num_bands is {given!r} but the checkpoint's "
                f"band route gives {self.route.num_routed} bands; use the training config's "
                "model settings."
            )

    def predict_dataloader(self) -> torch.utils.data.DataLoader:
        """This rank's blocks, batch by batch (one window read at a time per loader process)."""
        if self.trainer is not None:
            self._check_task_bands()
        rank = self.trainer.global_rank if self.trainer is not None else 0
        world = self.trainer.world_size if self.trainer is not None else 1
        if self.product_path is None:  # opened by the caller, who keeps it
            opener, close = functools.partial(_same, self.product), False
        else:
            opener = functools.partial(_open, self.reader, self.product_path, self.reader_options)
            close = True
        self.predict_dataset = ProductWindowDataset(
            opener,
            self.grid,
            self.rank_blocks(world)[rank],
            self.tile_size if self.formulation == "segmentation" else self.patch_size,
            self.route,
            self.route_bands(),
            self.batch_size,
            close,
            self.num_workers,
        )
        return torch.utils.data.DataLoader(
            self.predict_dataset,
            batch_size=None,
            num_workers=self.num_workers,
            persistent_workers=False,
        )

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict:
        """Resize patches to ``img_size`` (classification) on the batch's device."""
        if self.formulation == "classification":
            batch["image"] = resize_windows(batch["image"], self.img_size, self.interpolation)
        return batch

    # -- the block grid -------------------------------------------------------------------------

    @property
    def block_size(self) -> int:
        """The blocks' side: as given, or chosen from the band route (see ``block_size``)."""
        if self._block_size is None:
            self._block_size = auto_block_size(self.route.num_bands_out, self._reach)
        return self._block_size

    @property
    def _reach(self) -> int:
        """How far a block's window reaches past the block (on both sides together)."""
        return self.tile_size if self.formulation == "segmentation" else self.patch_size - 1

    @property
    def grid(self) -> BlockGrid:
        """The product's block grid, with the samples of each block."""
        height, width = self.shape
        return BlockGrid(
            height,
            width,
            self.block_size,
            self.formulation,
            self.tile_size,
            self.inference_stride,
            self.patch_size,
        )

    def num_blocks(self) -> int:
        """How many blocks the product is cut into."""
        return self.grid.num_blocks()

    def rank_blocks(self, world: int) -> list[range]:
        """The block numbers of each rank: contiguous runs, as even as possible."""
        n = self.num_blocks()
        bounds = [round(n * r / world) for r in range(world + 1)]
        return [range(bounds[r], bounds[r + 1]) for r in range(world)]

    def blocks_of_rank(self, rank: int = 0, world: int = 1) -> list[MapBlock]:
        """The blocks rank ``rank`` of ``world`` predicts (the loader builds them one at a time)."""
        return [self.block(i) for i in self.rank_blocks(world)[rank]]

    def block(self, index: int) -> MapBlock:
        """Block ``index`` with the window it reads and its samples."""
        return self.grid.block(index)


def auto_block_size(bands: int, reach: int, window_mb: float | None = None) -> int:
    """The largest multiple of 16, at most :data:`MAX_BLOCK_SIZE` and at least 16, whose window
    (the block plus ``reach`` pixels) of ``bands`` float32 bands holds at most ``window_mb``
    (default :data:`WINDOW_MB`) MB."""
    budget = (WINDOW_MB if window_mb is None else window_mb) * 2**20
    side = math.isqrt(int(budget // (4 * max(bands, 1)))) - reach
    return max(16, min(MAX_BLOCK_SIZE, side // 16 * 16))


def _same(product: SensorProduct) -> SensorProduct:
    return product


def _open(reader: str | None, path: str, options: dict[str, Any]) -> SensorProduct:
    """Open ``path`` with ``reader`` (a dotted path; default: the format found from the path)."""
    opener = _resolve(reader or "terratorch_hsi_peft.products.open_product")
    return opener(path, **options)


def _resolve(dotted: str) -> Any:
    """The object a dotted path names (``package.module.name``)."""
    module, _, name = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(
            f"reader={dotted!r} names no importable reader ({type(err).__name__}: {err}); give "
            "the dotted path of a SensorProduct class, e.g. "
            "terratorch_hsi_peft.products.EnviProduct."
        ) from err
