"""Every product format trains and maps through a config (TerraTorch's CLI, in-process): as
``scene: product`` with ``scene_options``, or as a ``ProductScene`` ``class_path``."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from terratorch.cli_tools import build_lightning_cli
from tiny_configs import class_map_writer, patch_classification, write_config

pytestmark = pytest.mark.slow


def by_name(folder: Path, path: Path) -> dict:
    """The product as ``scene: product`` with ``scene_options``."""
    return {
        "scene": "product",
        "root": str(folder),
        "scene_options": {"path": str(path), "labels": "labels.tif"},
    }


def by_class(folder: Path, path: Path) -> dict:
    """The product as a ``ProductScene`` ``class_path``."""
    paths = {"path": str(folder / path), "labels": str(folder / "labels.tif")}
    return {
        "scene": {"class_path": "terratorch_hsi_peft.datasets.ProductScene", "init_args": paths}
    }


@pytest.mark.parametrize(
    ("maker", "style"),
    [
        ("make_emit", by_name),
        ("make_enmap", by_class),
        ("make_prisma", by_name),
        ("make_geotiff", by_class),
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
    split = {"protocol": "per_class", "seed": 0, "train_size": 0.5, "val_size": 0.2}
    data = {
        **style(tmp_path, relative),
        "split": split,
        "band_route": "sentinel2",
        "batch_size": 64,
    }
    writer = class_map_writer(output_dir=str(tmp_path / "maps"))
    config = write_config(
        tmp_path / "config.yaml", patch_classification(tmp_path, data, 12, [writer])
    )
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
