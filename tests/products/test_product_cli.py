"""Training from a product through the real ``terratorch`` command: an ENVI fixture with a label
raster on its grid, the ``sentinel2`` route fed by the header's wavelengths, a tiny model."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import rasterio
import torch
from terratorch_cli import terratorch
from tiny_configs import class_map_writer, patch_classification, write_config

pytestmark = pytest.mark.slow

SCENE = {
    "scene": "product",
    "scene_options": {
        "path": "product/scene.hdr",
        "labels": "labels.tif",
        "class_names": ["meadow", "forest", "water"],
    },
    "band_route": "sentinel2",
    "batch_size": 64,
}


def test_terratorch_fit_and_predict_on_an_envi_product_with_a_label_raster(tmp_path, fake_products):
    shape = (24, 20)
    fake = fake_products.make_envi(tmp_path / "product", "bil", "int16", shape=shape)
    labels = fake_products.fake_labels(shape)
    fake_products.write_label_raster(tmp_path / "labels.tif", labels)
    split = {"protocol": "spatially_disjoint", "seed": 0, "block_size": 4}
    data = {**SCENE, "root": str(tmp_path), "split": split}
    writer = class_map_writer(output_dir=str(tmp_path / "maps"))
    fit = patch_classification(tmp_path, data, 12, [writer], max_steps=2)
    config = write_config(tmp_path / "fit.yaml", fit)
    output = terratorch(["fit", "-c", config], tmp_path, timeout=600)
    checkpoints = sorted((tmp_path / "run").rglob("*.ckpt"))
    assert checkpoints, output[-2000:]
    state = torch.load(checkpoints[-1], map_location="cpu", weights_only=True)
    saved = state["HyperspectralPatchDataModule"]
    # The sentinel2 route was fitted from the header's wavelengths on the 21 good bands.
    assert saved["band_route"]["route"] == "sentinel2"
    assert tuple(saved["band_route"]["matrix"].shape) == (12, 21)
    assert saved["split"]["protocol"] == "spatially_disjoint"
    nodata = np.flatnonzero(fake.nodata_mask.ravel())
    used = np.concatenate([saved["split"][part].numpy() for part in ("train", "val", "test")])
    assert not np.isin(used, nodata).any()
    terratorch(["predict", "-c", config, "--ckpt_path", checkpoints[-1]], tmp_path, timeout=600)
    with (
        warnings.catch_warnings(category=rasterio.errors.NotGeoreferencedWarning, action="ignore"),
        rasterio.open(tmp_path / "maps" / "scene_class_map.tif") as src,
    ):
        classes = src.read(1)
        assert src.tags()["class_3"] == "water"
    assert classes.shape == shape
    assert classes.min() >= 1 and classes.max() <= 3
