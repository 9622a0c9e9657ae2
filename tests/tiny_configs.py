"""Configs of tiny runs through TerraTorch's CLI, shared by the tests that build them.

Each builder returns the config as a dict (a test changes what it is about, then writes it with
:func:`write_config`): a quiet CPU trainer, a one-block SpectralGPT of width 16, and either the
plugin's patch datamodule or TerraTorch's ``DummyDataModule``. Importable from every test module
(pytest puts this folder on ``sys.path``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "TINY_SPECTRALGPT",
    "class_map_writer",
    "dummy_segmentation",
    "patch_classification",
    "quiet_trainer",
    "write_config",
]

#: A SpectralGPT small enough for a step in a test: one block of width 16.
TINY_SPECTRALGPT = {
    "backbone": "spectralgpt_vit_base",
    "backbone_depth": 1,
    "backbone_embed_dim": 16,
    "backbone_num_heads": 2,
}


def quiet_trainer(**overrides: Any) -> dict[str, Any]:
    """A one-step CPU trainer without logger, progress bar or model summary (``overrides`` win)."""
    trainer = {
        "accelerator": "cpu",
        "devices": 1,
        "max_steps": 1,
        "limit_val_batches": 1,
        "num_sanity_val_steps": 0,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "logger": False,
    }
    return {**trainer, **overrides}


def class_map_writer(**init_args: Any) -> dict[str, Any]:
    """The plugin's ``ClassMapWriter`` as a ``trainer.callbacks`` entry."""
    return {"class_path": "terratorch_hsi_peft.callbacks.ClassMapWriter", "init_args": init_args}


def patch_classification(
    folder: Path,
    data: dict[str, Any],
    bands: int,
    callbacks: list[dict[str, Any]],
    **trainer: Any,
) -> dict[str, Any]:
    """Patch classification of 3 classes: ``HyperspectralPatchDataModule`` (3x3 patches resized
    to 8x8, ``data`` its other init arguments) and the tiny SpectralGPT on ``bands`` bands under
    ``EncoderDecoderFactory``; the trainer writes under ``folder/run``."""
    return {
        "seed_everything": 0,
        "trainer": {
            **quiet_trainer(**trainer),
            "default_root_dir": str(folder / "run"),
            "callbacks": callbacks,
        },
        "data": {
            "class_path": "terratorch_hsi_peft.datamodules.HyperspectralPatchDataModule",
            "init_args": {**data, "patch_size": 3, "img_size": 8},
        },
        "model": {
            "class_path": "terratorch.tasks.ClassificationTask",
            "init_args": {
                "model_factory": "EncoderDecoderFactory",
                "model_args": {
                    **TINY_SPECTRALGPT,
                    "backbone_num_bands": bands,
                    "backbone_img_size": 8,
                    "backbone_out_indices": [-1],
                    "decoder": "IdentityDecoder",
                    "num_classes": 3,
                },
            },
        },
    }


def dummy_segmentation(peft_config: dict[str, Any], **model_args: Any) -> dict[str, Any]:
    """A PEFT segmentation task on TerraTorch's ``DummyDataModule`` (6 bands, 16x16, 3 classes):
    the tiny SpectralGPT with an FCN decoder and ``peft_config``; ``model_args`` add or replace
    keys. No trainer: each test gives its own."""
    return {
        "data": {
            "class_path": "terratorch.datamodules.dummy_datamodule.DummyDataModule",
            "init_args": {"channels": 6, "height": 16, "width": 16, "segmentation": True},
        },
        "model": {
            "class_path": "terratorch.tasks.SemanticSegmentationTask",
            "init_args": {
                "model_factory": "PEFTEncoderDecoderFactory",
                "loss": "ce",
                "ignore_index": -1,
                "model_args": {
                    **TINY_SPECTRALGPT,
                    "backbone_num_bands": 6,
                    "backbone_img_size": 16,
                    "backbone_out_indices": [0],
                    "necks": [{"name": "ReshapeTokensToImage"}],
                    "decoder": "FCNDecoder",
                    "num_classes": 3,
                    "peft_config": peft_config,
                    **model_args,
                },
            },
        },
    }


def write_config(path: Path, config: dict[str, Any]) -> Path:
    """Write ``config`` as YAML to ``path``; return ``path``."""
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
