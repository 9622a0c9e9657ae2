"""Tiny models for the factory tests: a Prithvi ViT (fused qkv) and a SpectralGPT encoder."""

from __future__ import annotations

import copy

import pytest

#: EncoderDecoderFactory arguments of a tiny Prithvi ViT + UNet (4 blocks, 32 wide, 32x32 input).
PRITHVI_UNET_ARGS = {
    "backbone": "prithvi_eo_tiny",
    "backbone_pretrained": False,
    "backbone_img_size": 32,
    "backbone_depth": 4,
    "backbone_embed_dim": 32,
    "backbone_num_heads": 2,
    "backbone_patch_size": [1, 8, 8],
    "backbone_bands": [0, 1, 2],
    "necks": [
        {"name": "SelectIndices", "indices": [0, 1, 2, 3]},
        {"name": "ReshapeTokensToImage", "remove_cls_token": True},
        {"name": "LearnedInterpolateToPyramidal"},
    ],
    "decoder": "UNetDecoder",
    "decoder_channels": [32, 16, 8, 4],
    "num_classes": 3,
}

#: A tiny SpectralGPT encoder with the learned group fusion, FCN decoder (6 bands, 16x16 input).
SPECTRALGPT_FCN_ARGS = {
    "backbone": "spectralgpt_vit_base",
    "backbone_num_bands": 6,
    "backbone_img_size": 16,
    "backbone_depth": 2,
    "backbone_embed_dim": 32,
    "backbone_num_heads": 2,
    "backbone_group_fusion": "learned",
    "backbone_out_indices": [0, 1],
    "necks": [{"name": "ReshapeTokensToImage"}],
    "decoder": "FCNDecoder",
    "decoder_channels": 8,
    "num_classes": 3,
}

#: KronA on Prithvi's split q and v (TerraTorch's replace_qkv names them q_linear / v_linear).
PRITHVI_PEFT = {
    "method": "KRONA",
    "replace_qkv": "qkv",
    "peft_config_kwargs": {"target_modules": ["q_linear", "v_linear"]},
}


@pytest.fixture
def prithvi_args() -> dict:
    return copy.deepcopy(PRITHVI_UNET_ARGS)


@pytest.fixture
def spectralgpt_args() -> dict:
    return copy.deepcopy(SPECTRALGPT_FCN_ARGS)


@pytest.fixture
def prithvi_peft() -> dict:
    return copy.deepcopy(PRITHVI_PEFT)
