"""``terratorch predict`` maps an ENVI product on disk through configs/products/predict_envi.yaml,
with a tiny model trained by ``terratorch fit``, in one process and shared by two DDP processes."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import rasterio
from terratorch_cli import REPO_ROOT, terratorch

from terratorch_hsi_peft.products import open_product

pytestmark = pytest.mark.slow

_FAKES = REPO_ROOT / "tests" / "data" / "make_fake_products.py"
OVERLAY = REPO_ROOT / "configs" / "products" / "predict_envi.yaml"
SHAPE = (40, 44)

FIT = """\
seed_everything: 0
trainer:
  accelerator: cpu
  devices: 1
  max_steps: 2
  limit_val_batches: 0
  num_sanity_val_steps: 0
  enable_progress_bar: false
  logger: false
  default_root_dir: {run}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{dirpath: {run}/checkpoints, save_last: true, save_top_k: 0}}
data:
  class_path: terratorch_hsi_peft.datamodules.HyperspectralSceneDataModule
  init_args:
    scene: generic
    root: {root}
    scene_options: {{image_path: cube.npy, label_path: labels.npy, class_names: [a, b, c]}}
    split: {{protocol: per_class, seed: 0, train_size: 0.5, val_size: 0.1}}
    band_route: pca
    num_components: 5
    tile_size: 8
    batch_size: 4
model:
  class_path: terratorch.tasks.SemanticSegmentationTask
  init_args:
    model_factory: EncoderDecoderFactory
    loss: ce
    ignore_index: -1
    model_args:
      backbone: spectralgpt_vit_base
      backbone_depth: 1
      backbone_embed_dim: 16
      backbone_num_heads: 2
      backbone_num_bands: 5
      backbone_img_size: 8
      necks:
        - {{name: SelectIndices, indices: [-1]}}
        - {{name: ReshapeTokensToImage}}
      decoder: FCNDecoder
      num_classes: 3
"""


def _fakes():
    spec = importlib.util.spec_from_file_location("make_fake_products", _FAKES)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_terratorch_predict_maps_an_envi_product_in_one_and_in_two_ddp_processes(tmp_path):
    fakes = _fakes()
    product = fakes.make_envi(tmp_path / "product", "bil", "int16", shape=SHAPE, name="flight")
    # The training scene: the same cube without nodata pixels, its good bands, with labels.
    clean = fakes.make_envi(tmp_path / "clean", "bil", "int16", shape=SHAPE, nodata=None)
    good = ~clean.bad_bands
    scene = tmp_path / "scene"
    scene.mkdir()
    np.save(scene / "cube.npy", clean.expected[good].transpose(1, 2, 0))
    labels = np.random.default_rng(0).integers(1, 4, size=SHAPE)
    np.save(scene / "labels.npy", labels)
    fit = tmp_path / "fit.yaml"
    fit.write_text(FIT.format(run=tmp_path / "run", root=scene))
    terratorch(["fit", "--config", fit], tmp_path)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"

    predict = [
        "predict",
        *("--config", fit, "--config", OVERLAY),
        *("--data.init_args.product", product.path),
        *("--data.init_args.tile_size", 8, "--data.init_args.block_size", 16),
        *("--ckpt_path", ckpt),
    ]
    maps = {}
    for name, extra in (
        ("one", []),
        ("ddp", ["--trainer.devices", 2, "--trainer.strategy", "ddp"]),
    ):
        out = tmp_path / name
        output = terratorch([*predict, *extra, "--predict_output_dir", out], tmp_path)
        path = out / "flight_class_map.tif"
        assert f"Map of flight written: {path}" in output
        assert sorted(p.name for p in out.iterdir()) == [path.name]  # no part file left
        # the product's grid as the plugin reads it (see test_product_map.py)
        with rasterio.open(path) as written, open_product(product.path) as source:
            grid = source.metadata
            assert written.crs == grid.crs and written.transform == grid.transform
            assert written.block_shapes == [(16, 16)]
            maps[name] = written.read(1)
    assert (maps["one"][product.nodata_mask] == 0).all()
    assert set(np.unique(maps["one"][~product.nodata_mask])) <= {1, 2, 3}
    np.testing.assert_array_equal(maps["ddp"], maps["one"])
