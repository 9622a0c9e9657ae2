"""Lightning datamodules that turn a hyperspectral scene into TerraTorch batches and back."""

from terratorch_hsi_peft.datamodules.base import IGNORE_INDEX, HyperspectralDataModule
from terratorch_hsi_peft.datamodules.patch import HyperspectralPatchDataModule, PixelPatchDataset
from terratorch_hsi_peft.datamodules.pretrain import (
    HyperspectralPretrainDataModule,
    PretrainWindowDataset,
    SceneSource,
)
from terratorch_hsi_peft.datamodules.product_map import (
    ProductMapDataModule,
    ProductWindowDataset,
)
from terratorch_hsi_peft.datamodules.scene import (
    HyperspectralSceneDataModule,
    SceneTileDataset,
    tile_grid,
)

__all__ = [
    "IGNORE_INDEX",
    "HyperspectralDataModule",
    "HyperspectralPatchDataModule",
    "HyperspectralPretrainDataModule",
    "HyperspectralSceneDataModule",
    "PixelPatchDataset",
    "PretrainWindowDataset",
    "ProductMapDataModule",
    "ProductWindowDataset",
    "SceneSource",
    "SceneTileDataset",
    "tile_grid",
]
