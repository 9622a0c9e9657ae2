"""Every product format trains and maps through a config (TerraTorch's CLI, in-process): as
``scene: product`` with ``scene_options``, or as a ``ProductScene`` ``class_path``."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from terratorch.cli_tools import build_lightning_cli

pytestmark = pytest.mark.slow

CONFIG = """\
seed_everything: 0
trainer:
  accelerator: cpu
  devices: 1
  max_steps: 1
  limit_val_batches: 1
  num_sanity_val_steps: 0
  enable_progress_bar: false
  enable_model_summary: false
  logger: false
  default_root_dir: {folder}/run
  callbacks:
    - class_path: terratorch_hsi_peft.callbacks.ClassMapWriter
      init_args:
        output_dir: {folder}/maps
data:
  class_path: terratorch_hsi_peft.datamodules.HyperspectralPatchDataModule
  init_args:
{scene}
    split: {{protocol: per_class, seed: 0, train_size: 0.5, val_size: 0.2}}
    band_route: sentinel2
    patch_size: 3
    img_size: 8
    batch_size: 64
model:
  class_path: terratorch.tasks.ClassificationTask
  init_args:
    model_factory: EncoderDecoderFactory
    model_args:
      backbone: spectralgpt_vit_base
      backbone_depth: 1
      backbone_embed_dim: 16
      backbone_num_heads: 2
      backbone_num_bands: 12
      backbone_img_size: 8
      backbone_out_indices: [-1]
      decoder: IdentityDecoder
      num_classes: 3
"""

BY_NAME = """\
    scene: product
    root: {folder}
    scene_options: {{path: {path}, labels: labels.tif}}"""

BY_CLASS = """\
    scene:
      class_path: terratorch_hsi_peft.datasets.ProductScene
      init_args: {{path: {folder}/{path}, labels: {folder}/labels.tif}}"""


@pytest.mark.parametrize(
    ("maker", "style"),
    [
        ("make_emit", BY_NAME),
        ("make_enmap", BY_CLASS),
        ("make_prisma", BY_NAME),
        ("make_geotiff", BY_CLASS),
    ],
    ids=["emit", "enmap", "prisma", "geotiff"],
)
def test_fit_and_predict_each_format_through_a_config(tmp_path, fake_products, maker, style):
    fake = getattr(fake_products, maker)(tmp_path)
    labels = fake_products.fake_labels()
    georeferenced = maker != "make_emit"  # EMIT's swath has no grid: a plain label raster
    fake_products.write_label_raster(
        tmp_path / "labels.tif",
        labels,
        transform=fake_products.TRANSFORM if georeferenced else None,
    )
    relative = Path(fake.path).relative_to(tmp_path)
    scene = style.format(folder=tmp_path, path=relative)
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(folder=tmp_path, scene=scene))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli = build_lightning_cli(["fit", "-c", str(config)])
        assert cli.trainer.global_step == 1
        dm = cli.datamodule
        good = np.flatnonzero(~fake.bad_bands)
        assert dm.route.route == "sentinel2" and dm.route.num_bands_in == good.size
        np.testing.assert_allclose(dm.scene.wavelengths, fake.wavelengths[good], atol=1e-3)
        checkpoint = cli.trainer.checkpoint_callback.best_model_path
        build_lightning_cli(["predict", "-c", str(config), "--ckpt_path", checkpoint])
        with rasterio.open(next((tmp_path / "maps").glob("*_class_map.tif"))) as src:
            classes = src.read(1)
    assert classes.shape == fake_products.SHAPE
    assert classes.min() >= 1 and classes.max() <= 3
