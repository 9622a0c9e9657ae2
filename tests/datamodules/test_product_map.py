"""Mapping a product on disk block by block (ProductMapDataModule + GeoTiffMapWriter).

The block-wise map is compared, value by value, with the in-memory datamodules' map of the same
cube through the same model and band route; the reads are counted through a wrapped reader.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tracemalloc
import warnings
import weakref
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from lightning import LightningModule, Trainer, seed_everything
from terratorch.tasks import ClassificationTask, SemanticSegmentationTask

from terratorch_hsi_peft.callbacks import ClassMapWriter, GeoTiffMapWriter
from terratorch_hsi_peft.datamodules import (
    HyperspectralPatchDataModule,
    HyperspectralSceneDataModule,
    ProductMapDataModule,
    product_map,
)
from terratorch_hsi_peft.datamodules.product_map import (
    GDAL_CACHE_MB,
    MAX_BLOCK_SIZE,
    WINDOW_MB,
    ProductWindowDataset,
    auto_block_size,
)
from terratorch_hsi_peft.datasets import HyperspectralScene
from terratorch_hsi_peft.products import SensorProduct, open_product
from terratorch_hsi_peft.products.emit import emit_orthorectify
from terratorch_hsi_peft.transforms import BandRoute

_FAKES = Path(__file__).resolve().parents[1] / "data" / "make_fake_products.py"
SHAPE = (40, 44)
CLASSES = ["a", "b", "c"]
BACKBONE = {
    "backbone": "spectralgpt_vit_base",
    "backbone_depth": 1,
    "backbone_embed_dim": 16,
    "backbone_num_heads": 2,
    "backbone_num_bands": 5,
    "backbone_img_size": 8,
}


@pytest.fixture(scope="module")
def fakes():
    spec = importlib.util.spec_from_file_location("make_fake_products", _FAKES)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def product(fakes, tmp_path_factory):
    """An ENVI int16 product (gain 1e-4, bad bands, nodata pixels at two edges) and a PCA route
    fitted on its good bands' valid pixels."""
    fake = fakes.make_envi(
        tmp_path_factory.mktemp("product"), "bil", "int16", shape=SHAPE, name="flight"
    )
    with open_product(fake.path) as opened:
        good = opened.metadata.good_bands
    cube = fake.expected[good]  # (C, H, W), NaN at nodata
    valid = ~np.isnan(cube).any(axis=0)
    route = BandRoute.fit("pca", cube[:, valid].T, num_components=5)
    state = {"band_route": route.state_dict(), "class_names": '["a", "b", "c"]'}
    return fake, cube, route, state


def _segmentation_task() -> SemanticSegmentationTask:
    seed_everything(0)
    return SemanticSegmentationTask(
        model_factory="EncoderDecoderFactory",
        loss="ce",
        ignore_index=-1,
        model_args={
            **BACKBONE,
            "necks": [
                {"name": "SelectIndices", "indices": [-1]},
                {"name": "ReshapeTokensToImage"},
            ],
            "decoder": "FCNDecoder",
            "num_classes": 3,
        },
    )


def _classification_task() -> ClassificationTask:
    seed_everything(0)
    return ClassificationTask(
        model_factory="EncoderDecoderFactory",
        model_args={
            **BACKBONE,
            "backbone_out_indices": [-1],
            "decoder": "IdentityDecoder",
            "num_classes": 3,
        },
    )


def _trainer(callbacks, **kwargs) -> Trainer:
    options = {"accelerator": "cpu", "logger": False, "enable_progress_bar": False}
    return Trainer(callbacks=callbacks, **{**options, **kwargs})


def _in_memory_map(formulation, cube, route, state, task, root: Path) -> np.ndarray:
    """The existing in-memory route's map (class indices) of the cube, nodata pixels fed as the
    training mean (what the block-wise route feeds them as). The writer's files go under
    ``root`` (a test's tmp_path), not into the source tree."""
    image = np.where(np.isnan(cube), route.mean.numpy()[:, None, None], cube)
    scene = HyperspectralScene(image.transpose(1, 2, 0), class_names=CLASSES, name="flight")
    if formulation == "segmentation":
        dm = HyperspectralSceneDataModule(
            scene=scene, band_route="pca", num_components=5, tile_size=8, inference_stride=4
        )
    else:
        dm = HyperspectralPatchDataModule(
            scene=scene, band_route="pca", num_components=5, patch_size=5, img_size=8
        )
    dm.load_state_dict(state)
    writer = ClassMapWriter(output_dir=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _trainer([writer], default_root_dir=root).predict(task, dm, return_predictions=False)
    return writer.class_map


class CountingProduct(SensorProduct):
    """A product that records every window read from it."""

    def __init__(self, inner: SensorProduct) -> None:
        self.inner, self.path, self.metadata = inner, inner.path, inner.metadata
        self.windows: list = []
        self.gdal_cache: set = set()

    def _read_stored(self, window, bands):
        self.windows.append(window)
        # GDAL's own limit, in bytes (rasterio's Env passes the option to GDALSetCacheMax64).
        self.gdal_cache.add(rasterio.env.get_gdal_config("GDAL_CACHEMAX"))
        return self.inner._read_stored(window, bands)


def _product_dm(formulation, opened, state, **kwargs) -> ProductMapDataModule:
    options = {"tile_size": 8, "inference_stride": 4, "patch_size": 5, "img_size": 8}
    dm = ProductMapDataModule.from_product(
        opened, formulation=formulation, block_size=16, **{**options, **kwargs}
    )
    dm.load_state_dict(state)
    return dm


@pytest.mark.parametrize(
    ("formulation", "make_task"),
    [("segmentation", _segmentation_task), ("classification", _classification_task)],
)
def test_block_wise_map_equals_the_in_memory_map_on_the_product_grid(
    formulation, make_task, product, tmp_path
):
    fake, cube, route, state = product
    task = make_task()
    expected = _in_memory_map(formulation, cube, route, state, task, tmp_path / "in_memory")
    with open_product(fake.path) as inner:
        counting = CountingProduct(inner)
        dm = _product_dm(formulation, counting, state, batch_size=7)
        writer = GeoTiffMapWriter(output_dir=str(tmp_path / "map"), probabilities=None)
        # Nothing kept in memory for Lightning to return (it would by default).
        assert _trainer([writer]).predict(task, dm) is None

    path = tmp_path / "map" / "flight_class_map.tif"
    assert writer.written == [path]
    # The product's grid as the plugin reads it: a bare rasterio.open of the ENVI binary fails
    # once TerraTorch's CLI has set GDAL_DISABLE_READDIR_ON_OPEN in this process.
    with rasterio.open(path) as written, open_product(fake.path) as source:
        grid = source.metadata
        assert written.crs == grid.crs and written.transform == grid.transform
        assert written.block_shapes == [(16, 16)] and written.compression.value == "DEFLATE"
        assert written.nodata == 0
        assert written.tags()["class_2"] == "b"
        raw = written.read(1)
    assert raw.shape == SHAPE
    nodata = fake.nodata_mask
    assert nodata.any() and (raw[nodata] == 0).all()
    np.testing.assert_array_equal(raw[~nodata], expected[~nodata] + 1)
    assert (expected >= 0).all()

    # Each block read once, never more than the block plus the halo (the tile or patch reach).
    halo = 8 if formulation == "segmentation" else 2
    assert len(counting.windows) == dm.num_blocks() == 9
    assert max(w.height for w in counting.windows) <= 16 + 2 * halo
    assert max(w.width for w in counting.windows) <= 16 + 2 * halo
    assert sum(w.height * w.width for w in counting.windows) < 2.5 * SHAPE[0] * SHAPE[1]
    # GDAL's block cache kept small: windows read once would only fill it (memory growing with
    # the product: +741 MiB over 1 Mpx in benchmarks/product_scale.py's product, +349 with it).
    assert counting.gdal_cache == {GDAL_CACHE_MB * 2**20}
    assert list(path.parent.iterdir()) == [path]  # no temporary file left


def test_probabilities_are_written_block_by_block_beside_the_classes(product, tmp_path):
    fake, _, _, state = product
    task = _segmentation_task()
    task.select_classes = lambda y: [task.output_prediction(y), task.output_probabilities(y)]
    read = {}
    for kind in ("float32", "uint8"):
        writer = GeoTiffMapWriter(output_dir=str(tmp_path / kind), probabilities=kind)
        dm = _product_dm("segmentation", open_product(fake.path), state)
        _trainer([writer]).predict(task, dm, return_predictions=False)
        with rasterio.open(writer.written[0]) as classes:
            raw = classes.read(1)
        with rasterio.open(writer.written[1]) as probs:
            assert probs.count == 3 and probs.dtypes[0] == kind
            read[kind] = probs.read()
    valid = ~fake.nodata_mask
    values = read["float32"]
    assert np.isnan(values[:, fake.nodata_mask]).all()
    np.testing.assert_allclose(values[:, valid].sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(values[:, valid].argmax(axis=0) + 1, raw[valid])
    scaled = read["uint8"]
    assert (scaled[:, fake.nodata_mask] == 255).all()
    np.testing.assert_array_equal(scaled[:, valid], np.round(values[:, valid] * 254))


def test_an_interrupted_map_leaves_no_file(product, tmp_path):
    fake, _, _, state = product
    task = _segmentation_task()
    calls = {"n": 0}
    forward = task.forward

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # as a user's Ctrl-C mid-map
        return forward(*args, **kwargs)

    task.forward = failing
    dm = _product_dm("segmentation", open_product(fake.path), state, batch_size=4)
    writer = GeoTiffMapWriter(output_dir=str(tmp_path))
    trainer = _trainer([writer])
    with pytest.raises(SystemExit):  # Lightning turns the interrupt into an exit
        trainer.predict(task, dm, return_predictions=False)
    assert calls["n"] == 3
    assert list(tmp_path.iterdir()) == []


def test_predict_without_a_checkpoint_or_the_writer_says_what_to_add(product, tmp_path):
    fake, _, _, state = product
    dm = ProductMapDataModule(str(fake.path), tile_size=8, block_size=16)
    writer = GeoTiffMapWriter(output_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"--ckpt_path .*HyperspectralSceneDataModule"):
        _trainer([writer]).predict(_segmentation_task(), dm)
    dm = _product_dm("segmentation", open_product(fake.path), state)
    with pytest.raises(ValueError, match=r"class_path: terratorch_hsi_peft.callbacks.GeoTiff"):
        _trainer([]).predict(_segmentation_task(), dm)
    dm = _product_dm("segmentation", open_product(fake.path), state)
    with pytest.raises(ValueError, match=r"set formulation: classification"):
        _trainer([writer]).predict(_classification_task(), dm)


def test_a_route_for_another_band_count_names_both_counts(product):
    fake = product[0]
    route = BandRoute.fit("pca", np.random.default_rng(0).random((50, 7)), num_components=5)
    state = {"band_route": route.state_dict(), "class_names": '["a", "b", "c"]'}
    dm = _product_dm("segmentation", open_product(fake.path), state)
    with pytest.raises(ValueError, match=r"reads 7 bands, but .* has 24 bands \(21 not marked"):
        dm.route_bands()


def test_ranks_share_the_blocks_without_overlap(product):
    fake, _, _, state = product
    dm = _product_dm("classification", open_product(fake.path), state)
    shares = dm.rank_blocks(2)
    assert [list(s) for s in shares] == [list(range(0, 4)), list(range(4, 9))]
    owned = np.zeros(SHAPE, dtype=int)
    for index in range(dm.num_blocks()):
        block = dm.block(index)
        rows, cols = block.owned.slices()
        owned[rows, cols] += 1
    assert (owned == 1).all()


def test_batches_are_full_across_blocks_but_the_last(product):
    fake, _, _, state = product
    dm = _product_dm("segmentation", open_product(fake.path), state, batch_size=7)
    batches = list(dm.predict_dataloader())
    sizes = [len(b["image"]) for b in batches]
    total = sum(dm.grid.num_samples(i) for i in range(dm.num_blocks()))
    assert sum(sizes) == total and len(batches) == len(dm.predict_dataset) == -(-total // 7)
    assert set(sizes[:-1]) == {7} and 1 <= sizes[-1] <= 7
    # Every block announced once, with the samples that name it; some batches span two blocks.
    announced = torch.cat([b["map_blocks"] for b in batches])
    assert announced[:, 0].tolist() == list(range(dm.num_blocks()))
    per_block = torch.bincount(torch.cat([b["map_block"] for b in batches]))
    assert per_block.tolist() == announced[:, 1].tolist()
    assert any(len(b["map_block"].unique()) > 1 for b in batches)
    for batch in batches:
        owned = batch["map_blocks"][:, 4:]
        assert len(batch["map_nodata"]) == int((owned[:, 0] * owned[:, 1]).sum())


def test_a_window_read_in_strips_equals_one_read(product, monkeypatch):
    fake, _, _, state = product
    with open_product(fake.path) as inner, rasterio.Env():
        counting = CountingProduct(inner)
        dm = _product_dm("segmentation", counting, state)
        dataset = dm.predict_dataloader().dataset
        block = dm.block(4)
        whole, whole_nodata = dataset.read_block(counting, block)
        assert len(counting.windows) == 1
        monkeypatch.setattr(product_map, "READ_STRIP_MB", 0)  # one row per strip
        strips, strips_nodata = dataset.read_block(counting, block)
    assert len(counting.windows) == 1 + block.read.height
    assert {w.height for w in counting.windows[1:]} == {1}
    torch.testing.assert_close(strips, whole, rtol=1e-6, atol=1e-6)
    assert torch.equal(strips_nodata, whole_nodata)


class ConstantModel(LightningModule):
    """A stand-in model: class 0 for every tile pixel or patch (the memory test needs no
    network, only the loader and the writer)."""

    def __init__(self, formulation: str) -> None:
        super().__init__()
        self.formulation = formulation

    def predict_step(self, batch, batch_idx):
        image = batch["image"]
        per_sample = image.shape[-2:] if self.formulation == "segmentation" else ()
        return torch.zeros((len(image), *per_sample), dtype=torch.int64)


def _map_memory(formulation, fake, state, tmp_path, monkeypatch) -> dict[str, int]:
    """Map ``fake`` with the stand-in model: the most windows alive at once, the most blocks
    the writer held, and the peak of the Python (numpy) allocations while mapping."""
    live = {"now": 0, "most": 0}
    read_block = ProductWindowDataset.read_block

    def counted(self, opened, block):
        cube, nodata = read_block(self, opened, block)
        live["now"] += 1
        live["most"] = max(live["most"], live["now"])
        weakref.finalize(cube, lambda: live.__setitem__("now", live["now"] - 1))
        return cube, nodata

    held = {"most": 0}  # a counter, not a list: the measure must not grow with the batches
    write = GeoTiffMapWriter.write_on_batch_end

    def writing(self, *args, **kwargs):
        write(self, *args, **kwargs)
        held["most"] = max(held["most"], len(self._open_blocks))

    monkeypatch.setattr(ProductWindowDataset, "read_block", counted)
    monkeypatch.setattr(GeoTiffMapWriter, "write_on_batch_end", writing)
    dm = ProductMapDataModule(
        str(fake.path),
        formulation=formulation,
        block_size=16,
        tile_size=8,
        inference_stride=4,
        patch_size=5,
        img_size=8,
        batch_size=5,
    )
    dm.load_state_dict(state)
    writer = GeoTiffMapWriter(output_dir=str(tmp_path))
    tracemalloc.start()
    try:
        _trainer([writer]).predict(ConstantModel(formulation), dm, return_predictions=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    with rasterio.open(writer.written[0]) as written:
        assert (written.read(1)[~fake.nodata_mask] == 1).all()
    return {"windows": live["most"], "blocks": held["most"], "peak": peak, "n": dm.num_blocks()}


@pytest.mark.parametrize("formulation", ["segmentation", "classification"])
def test_memory_does_not_grow_with_the_product(formulation, fakes, product, tmp_path, monkeypatch):
    fake, _, _, state = product
    large = fakes.make_envi(tmp_path / "large", "bil", "int16", shape=(160, 176), name="flight")
    _map_memory(formulation, fake, state, tmp_path / "warm_up", monkeypatch)  # lazy imports
    small = _map_memory(formulation, fake, state, tmp_path / "small_map", monkeypatch)
    big = _map_memory(formulation, large, state, tmp_path / "large_map", monkeypatch)
    assert (small["n"], big["n"]) == (9, 110)  # 16x the pixels
    # One window alive at a time, and the writer holds the blocks of one batch at most.
    assert small["windows"] == big["windows"] == 1
    assert small["blocks"] <= 2 and big["blocks"] <= 2
    # Python-allocated buffers (the windows read, the blocks' sample arrays and map buffers) do
    # not grow with the product: 16x the pixels, the same peak (building every block's sample
    # arrays up front, as before, was 1.4x for tiles and 4.7x for patches here).
    assert big["peak"] < 1.25 * small["peak"], (small, big)


def test_two_loader_workers_write_the_same_map(product, tmp_path):
    fake, _, _, state = product
    task = _segmentation_task()
    maps = {}
    for workers in (0, 2):
        dm = ProductMapDataModule(
            str(fake.path),
            block_size=16,
            tile_size=8,
            inference_stride=4,
            batch_size=7,
            num_workers=workers,
        )
        dm.load_state_dict(state)
        writer = GeoTiffMapWriter(output_dir=str(tmp_path / str(workers)))
        _trainer([writer]).predict(task, dm, return_predictions=False)
        # Each worker reads its own blocks (every other one) and ends with its own partial batch.
        assert len(dm.predict_dataset) == len(list(dm.predict_dataloader()))
        with rasterio.open(writer.written[0]) as written:
            maps[workers] = written.read(1)
    assert (maps[0][~fake.nodata_mask] > 0).all()
    np.testing.assert_array_equal(maps[2], maps[0])


@pytest.mark.parametrize(("bands", "reach"), [(12, 32), (236, 8), (212, 32), (5000, 8), (1, 0)])
def test_auto_block_size_is_the_largest_window_within_the_budget(bands, reach):
    size = auto_block_size(bands, reach)
    assert size % 16 == 0 and 16 <= size <= MAX_BLOCK_SIZE

    def window_bytes(side: int) -> int:
        return (side + reach) ** 2 * bands * 4

    if size > 16:  # fits, unless only the smallest block is left
        assert window_bytes(size) <= WINDOW_MB * 2**20
    if size < MAX_BLOCK_SIZE:  # the next multiple of 16 would not fit
        assert window_bytes(size + 16) > WINDOW_MB * 2**20
    # The cases the docs quote: a 12-band route, and a 224-band spectral path after 12 bands.
    assert auto_block_size(12, 32) == 512 and auto_block_size(236, 8) == 176


def test_without_block_size_the_block_follows_the_route_width(product, tmp_path):
    """block_size null: the checkpoint route's output bands choose the block (and the GeoTIFF
    tile); a route with appended spectra gets smaller blocks, so its window stays in budget."""
    fake, cube, _, _ = product
    valid = ~np.isnan(cube).any(axis=0)
    for append, budget in ((False, 1.0), (True, 0.05)):
        route = BandRoute.fit("pca", cube[:, valid].T, num_components=5, append_spectra=append)
        state = {"band_route": route.state_dict(), "class_names": '["a", "b", "c"]'}
        with open_product(fake.path) as opened:
            dm = ProductMapDataModule.from_product(opened, tile_size=8, inference_stride=4)
            dm.load_state_dict(state)
            assert dm.block_size == auto_block_size(route.num_bands_out, 8)
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(product_map, "WINDOW_MB", budget)
                fresh = ProductMapDataModule.from_product(opened, tile_size=8, inference_stride=4)
                fresh.load_state_dict(state)
                side = fresh.block_size
        assert side == auto_block_size(route.num_bands_out, 8, budget)
        assert (side + 8) ** 2 * route.num_bands_out * 4 <= budget * 2**20 or side == 16
    assert auto_block_size(route.num_bands_out, 8, 0.05) < auto_block_size(5, 8, 0.05)


@pytest.mark.parametrize("maker", ["make_emit", "make_enmap", "make_prisma", "make_geotiff"])
def test_every_format_maps_block_by_block_as_in_memory_on_its_grid(maker, fakes, tmp_path):
    """The block-wise route reads each format through its reader: the same map as the in-memory
    route, on the product's grid; EMIT's swath also on its geometry lookup table's grid."""
    fake = getattr(fakes, maker)(tmp_path / "product")
    with open_product(fake.path) as opened:
        meta = opened.metadata
    cube = fake.expected[meta.good_bands]
    valid = ~np.isnan(cube).any(axis=0)
    route = BandRoute.fit("pca", cube[:, valid].T, num_components=5)
    state = {"band_route": route.state_dict(), "class_names": json.dumps(CLASSES)}
    task = _segmentation_task()
    expected = _in_memory_map("segmentation", cube, route, state, task, tmp_path / "in_memory")
    dm = ProductMapDataModule(str(fake.path), tile_size=8, inference_stride=4, block_size=16)
    dm.load_state_dict(state)
    writer = GeoTiffMapWriter(output_dir=str(tmp_path / "map"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the EMIT swath is not georeferenced
        _trainer([writer]).predict(task, dm)
    with rasterio.open(writer.written[0]) as written:
        raw = written.read(1)
        if meta.transform is not None:
            assert written.crs == meta.crs and written.transform == meta.transform
    np.testing.assert_array_equal(raw[valid], expected[valid] + 1)
    assert (raw[~valid] == 0).all()
    if maker != "make_emit":
        assert len(writer.written) == 1
        return
    ortho_path = writer.written[-1]
    assert ortho_path.name == f"{dm.name}_class_map_ortho.tif"
    with rasterio.open(ortho_path) as ortho:
        assert ortho.crs == meta.extra["ortho_crs"]
        assert ortho.transform == meta.extra["ortho_transform"]
        assert ortho.nodata == 0 and ortho.tags()["class_2"] == "b"
        np.testing.assert_array_equal(
            ortho.read(1),
            emit_orthorectify(raw, meta.extra["glt_x"], meta.extra["glt_y"], fill=0),
        )
    assert sorted(p.name for p in ortho_path.parent.iterdir()) == sorted(
        p.name for p in writer.written
    )  # no temporary file left
