"""TerraTorch's own example configs, shrunk to run offline on a CPU in seconds.

``burn_scars`` and ``eurosat`` rebuild ``examples/confs/burn_scars.yaml`` and ``eurosat.yaml`` of
TerraTorch's repository (IBM/terratorch, read at commits b77450a and 188f894) key by key, with
only what running them offline needs changed: a tiny backbone with random weights, generated
rasters in a temporary folder, a few steps, no logger or rich progress bar, 32-bit precision on the
CPU, ``ToTensorV2`` by its full class path (the short spelling fails on TerraTorch 1.2.11) and
``prithvi_eo_v1_100`` for ``prithvi_vit_100`` (the name TerraTorch 1.2 registers).
:func:`switch_to_plugin` then applies the switch of ``docs/existing_pipeline.md``, and
:func:`swap_in_spectralgpt` changes nothing but the backbone name and its band/size keys.

Importable from every test module (pytest puts this folder on ``sys.path``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import yaml

#: The six HLS bands of both example configs, in the datasets' order.
HLS_BANDS = ["BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2"]
#: EuroSAT (torchgeo) band names: all 13 are in every file; the config picks six.
EUROSAT_ALL_BANDS = [f"B{i:02d}" for i in range(1, 13)] + ["B8A"]
EUROSAT_BANDS = ["B02", "B03", "B04", "B8A", "B11", "B12"]
EUROSAT_CLASSES = [
    "AnnualCrop",
    "Forest",
    "HerbaceousVegetation",
    "Highway",
    "Industrial",
    "Pasture",
    "PermanentCrop",
    "Residential",
    "River",
    "SeaLake",
]
SIZE = 32  # pixels per side of every generated raster and of the models' input
#: Prithvi's shapes shrunk: width 48 (heads of 24), two blocks.
TINY_PRITHVI = {"backbone_embed_dim": 48, "backbone_depth": 2, "backbone_num_heads": 2}
#: SpectralGPT shrunk the same way.
TINY_SPECTRALGPT = {"backbone_embed_dim": 48, "backbone_depth": 2, "backbone_num_heads": 2}
TO_TENSOR = {"class_path": "albumentations.pytorch.ToTensorV2"}

#: The trainer both examples run with here (the upstream block with the offline changes).
TRAINER = {
    "accelerator": "cpu",
    "devices": 1,
    "num_nodes": 1,
    "precision": 32,
    "logger": False,
    "enable_progress_bar": False,
    "max_steps": 2,
    "limit_val_batches": 1,
    "num_sanity_val_steps": 0,
    "check_val_every_n_epoch": 1,
    "log_every_n_steps": 1,
    "enable_checkpointing": True,
}


def _write_tif(path: Path, array: np.ndarray) -> None:
    bands, height, width = array.shape
    with rasterio.open(
        path, "w", driver="GTiff", height=height, width=width, count=bands, dtype=array.dtype
    ) as raster:
        raster.write(array)


def make_burn_scars(root: Path, per_split: int = 4, seed: int = 0) -> Path:
    """HLS-burn-scars-like rasters: ``<root>/{training,validation}/<id>_merged.tif`` (6 float32
    bands) and ``<id>.mask.tif`` (0, 1, and -1 for no data); returns ``root``."""
    rng = np.random.default_rng(seed)
    for split in ("training", "validation"):
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_split):
            image = rng.normal(0.1, 0.05, (len(HLS_BANDS), SIZE, SIZE)).astype(np.float32)
            mask = (image[3:4] > 0.1).astype(np.int16)  # "burnt" where NIR is high
            mask[:, :2, :2] = -1
            _write_tif(folder / f"scene_{split}_{i}_merged.tif", image)
            _write_tif(folder / f"scene_{split}_{i}.mask.tif", mask)
    return root


def make_eurosat(root: Path, per_class: int = 1, seed: int = 0) -> Path:
    """A EuroSAT tree as torchgeo reads it (13-band GeoTIFFs per class folder, split files);
    every image is in every split; returns ``root``."""
    rng = np.random.default_rng(seed)
    base = root / "ds" / "images" / "remote_sensing" / "otherDatasets" / "sentinel_2" / "tif"
    names = []
    for label, name in enumerate(EUROSAT_CLASSES):
        (base / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = rng.normal(1000 + 50 * label, 100, (13, SIZE, SIZE)).astype(np.uint16)
            _write_tif(base / name / f"{name}_{i}.tif", image)
            names.append(f"{name}_{i}.jpg")
    for split in ("train", "val", "test"):
        (root / f"eurosat-{split}.txt").write_text("\n".join(names) + "\n")
    return root


def burn_scars(data_root: Path, out_dir: Path) -> dict[str, Any]:
    """``examples/confs/burn_scars.yaml``: Prithvi ViT-100 + FCNDecoder, no necks, shrunk."""
    return {
        "seed_everything": 0,
        "trainer": {**TRAINER, "default_root_dir": str(out_dir)},
        "data": {
            "class_path": "GenericNonGeoSegmentationDataModule",
            "init_args": {
                "batch_size": 2,
                "num_workers": 0,
                "dataset_bands": HLS_BANDS,
                "output_bands": HLS_BANDS,
                "rgb_indices": [2, 1, 0],
                "train_transform": [
                    {
                        "class_path": "albumentations.RandomCrop",
                        "init_args": {"height": SIZE, "width": SIZE},
                    },
                    {"class_path": "albumentations.HorizontalFlip", "init_args": {"p": 0.5}},
                    TO_TENSOR,
                ],
                "no_data_replace": 0,
                "no_label_replace": -1,
                "train_data_root": str(data_root / "training"),
                "train_label_data_root": str(data_root / "training"),
                "val_data_root": str(data_root / "validation"),
                "val_label_data_root": str(data_root / "validation"),
                "test_data_root": str(data_root / "validation"),
                "test_label_data_root": str(data_root / "validation"),
                "img_grep": "*_merged.tif",
                "label_grep": "*.mask.tif",
                "means": [0.0333, 0.0570, 0.0589, 0.2323, 0.1973, 0.1194],
                "stds": [0.0227, 0.0268, 0.0400, 0.0779, 0.0871, 0.0724],
                "num_classes": 2,
            },
        },
        "model": {
            "class_path": "terratorch.tasks.SemanticSegmentationTask",
            "init_args": {
                "model_args": {
                    "decoder": "FCNDecoder",
                    "backbone_pretrained": False,
                    "backbone": "prithvi_eo_v1_100",  # upstream's prithvi_vit_100, renamed
                    **TINY_PRITHVI,
                    "decoder_channels": 16,
                    "backbone_bands": HLS_BANDS,
                    "num_classes": 2,
                    "head_dropout": 0.1,
                    "decoder_num_convs": 4,
                    "head_channel_list": [16],
                },
                "loss": "dice",
                "plot_on_val": False,
                "ignore_index": -1,
                "freeze_backbone": False,
                "freeze_decoder": False,
                "model_factory": "EncoderDecoderFactory",
                "tiled_inference_parameters": {
                    "h_crop": SIZE,
                    "h_stride": SIZE - 8,
                    "w_crop": SIZE,
                    "w_stride": SIZE - 8,
                    "average_patches": True,
                },
            },
        },
        "optimizer": {
            "class_path": "torch.optim.Adam",
            "init_args": {"lr": 1.5e-5, "weight_decay": 0.05},
        },
        "lr_scheduler": {"class_path": "ReduceLROnPlateau", "init_args": {"monitor": "val/loss"}},
    }


def eurosat(data_root: Path, out_dir: Path) -> dict[str, Any]:
    """``examples/confs/eurosat.yaml``: Prithvi EO v2 300 + IdentityDecoder + MLP head, shrunk."""
    return {
        "seed_everything": 0,
        "trainer": {**TRAINER, "default_root_dir": str(out_dir)},
        "data": {
            "class_path": "terratorch.datamodules.TorchNonGeoDataModule",
            "init_args": {
                "transforms": [
                    {
                        "class_path": "albumentations.augmentations.geometric.resize.Resize",
                        "init_args": {"height": SIZE, "width": SIZE},
                    },
                    TO_TENSOR,
                ],
                "cls": "torchgeo.datamodules.EuroSATDataModule",
                "batch_size": 4,
                "num_workers": 0,
            },
            "dict_kwargs": {"root": str(data_root), "download": False, "bands": EUROSAT_BANDS},
        },
        "model": {
            "class_path": "terratorch.tasks.ClassificationTask",
            "init_args": {
                "model_args": {
                    "decoder": "IdentityDecoder",
                    "backbone_pretrained": False,
                    "backbone": "prithvi_eo_v2_300",
                    **TINY_PRITHVI,
                    "head_dim_list": [32, 16],
                    "backbone_bands": HLS_BANDS,
                    "num_classes": 10,
                    "head_dropout": 0.1,
                },
                "loss": "ce",
                "freeze_backbone": False,
                "model_factory": "EncoderDecoderFactory",
            },
        },
        "optimizer": {
            "class_path": "torch.optim.AdamW",
            "init_args": {"lr": 1.0e-4, "weight_decay": 0.05},
        },
        "lr_scheduler": {"class_path": "ReduceLROnPlateau", "init_args": {"monitor": "val/loss"}},
    }


def switch_to_plugin(config: dict[str, Any], fused_qkv: bool = True) -> dict[str, Any]:
    """The two-line switch of ``docs/existing_pipeline.md``: the plugin's factory and KronA+ on
    Q and V (split from a fused ``qkv`` first when the backbone fuses them, as Prithvi does)."""
    config = copy.deepcopy(config)
    init_args = config["model"]["init_args"]
    init_args["model_factory"] = "PEFTEncoderDecoderFactory"
    peft: dict[str, Any] = {"method": "KRONA_PLUS"}
    if fused_qkv:
        peft["replace_qkv"] = "qkv"
        peft["peft_config_kwargs"] = {"target_modules": ["q_linear", "v_linear"]}
    else:
        peft["peft_config_kwargs"] = {"target_modules": ["attn.q", "attn.v"]}
    init_args["model_args"]["peft_config"] = peft
    return config


def swap_in_spectralgpt(config: dict[str, Any]) -> dict[str, Any]:
    """The same config with SpectralGPT: the backbone name and its band/size keys, nothing else."""
    config = copy.deepcopy(config)
    model_args = config["model"]["init_args"]["model_args"]
    bands = model_args.pop("backbone_bands")
    for key in TINY_PRITHVI:
        model_args.pop(key)
    model_args.update(
        backbone="spectralgpt_vit_base",
        backbone_num_bands=len(bands),
        backbone_img_size=SIZE,
        **TINY_SPECTRALGPT,
    )
    return config


class _NoAliases(yaml.SafeDumper):
    # A list written once and referenced twice (&id001 / *id001) is one object after loading, and
    # jsonargparse's in-place band conversion of the data block would then reach model_args too.
    def ignore_aliases(self, data: Any) -> bool:
        return True


def write(config: dict[str, Any], path: Path) -> Path:
    """Write ``config`` as YAML to ``path`` (every list spelled out); return ``path``."""
    path.write_text(yaml.dump(config, Dumper=_NoAliases, sort_keys=False))
    return path
