"""The masked autoencoder registered with TerraTorch: ``spectralgpt_mae_vit_{base,large,huge}``.

They live in ``TERRATORCH_FULL_MODEL_REGISTRY``, so stock ``FullModelFactory`` builds them and
stock ``ReconstructionTask`` trains them::

    model:
      class_path: terratorch.tasks.ReconstructionTask
      init_args:
        model_factory: FullModelFactory
        model_args: {model: spectralgpt_mae_vit_base, num_bands: 12, img_size: 32}

Every other ``model_args`` key reaches the builder; unknown keys are a TypeError listing the
valid ones, and strings that dotted command-line overrides leave (``"false"``, ``"0.75"``) are
read as YAML scalars.
"""

from __future__ import annotations

from typing import Any

from terratorch_hsi_peft.backbones.checkpoint import SPECTRALGPT_PLUS_URL
from terratorch_hsi_peft.backbones.factories import (
    VIT_BASE,
    VIT_HUGE,
    VIT_LARGE,
    documented,
    pop_checkpoint,
    read_options,
)
from terratorch_hsi_peft.pretraining.checkpoint import load_mae_checkpoint
from terratorch_hsi_peft.pretraining.mae import OFFICIAL_MASK_RATIO, SpectralGPTMAE
from terratorch_hsi_peft.registry import register_full_model

__all__ = ["spectralgpt_mae_vit_base", "spectralgpt_mae_vit_huge", "spectralgpt_mae_vit_large"]

_DEFAULTS: dict[str, Any] = {
    "pretrained": False,
    "ckpt_path": None,
    "ckpt_sha256": None,
    "num_bands": 12,
    "img_size": 128,
    "patch_size": 8,
    "t_patch_size": 3,
    "mlp_ratio": 4.0,
    "decoder_embed_dim": 512,
    "decoder_depth": 4,
    "decoder_num_heads": 16,
    "mask_ratio": OFFICIAL_MASK_RATIO,
    "norm_pix_loss": False,
    "drop_path_rate": 0.0,
}

_KWARGS_DOC = """
    Keyword arguments (``model_args`` keys next to ``model``), defaults in brackets:
        pretrained (bool) [False]: load the released pre-training checkpoint (encoder and decoder)
            when no ``ckpt_path`` is given.
        ckpt_path (str | None) [None]: an official pre-training checkpoint (or an encoder-only
            export, which starts a fresh decoder), file or http(s) URL (cached as the
            backbone's); loaded with a report.
        ckpt_sha256 (str | None) [None]: the checkpoint's expected sha256, checked when given.
        num_bands (int) [12], img_size (int) [128], patch_size (int) [8], t_patch_size (int) [3],
            mlp_ratio (float) [4.0], drop_path_rate (float) [0.0]: as ``spectralgpt_vit_*``.
        embed_dim, depth, num_heads (int): encoder width, blocks and heads [{arch}].
        decoder_embed_dim (int) [512], decoder_depth (int) [4], decoder_num_heads (int) [16]: the
            official decoder.
        mask_ratio (float) [0.9]: share of tokens masked (the official pre-training commands).
        norm_pix_loss (bool) [False]: per-patch normalised targets (official option).
"""


def _build(name: str, arch: dict[str, int], official_url: str | None, kwargs: dict) -> Any:
    options = read_options(name, {**_DEFAULTS, **arch}, kwargs, "model_args next to 'model'")
    ckpt_path, ckpt_sha256 = pop_checkpoint(name, options, official_url)
    model = SpectralGPTMAE(**options)
    if ckpt_path is not None:
        load_mae_checkpoint(model, ckpt_path, sha256=ckpt_sha256)
    return model


@register_full_model
@documented(
    "SpectralGPT ViT-Base masked autoencoder. ``pretrained=True`` without ``ckpt_path`` "
    "continues from SpectralGPT+ (Zenodo record 8412455).",
    VIT_BASE,
    _KWARGS_DOC,
)
def spectralgpt_mae_vit_base(**kwargs: Any) -> SpectralGPTMAE:
    return _build("spectralgpt_mae_vit_base", VIT_BASE, SPECTRALGPT_PLUS_URL, kwargs)


@register_full_model
@documented(
    "SpectralGPT ViT-Large masked autoencoder (official shapes), random init.",
    VIT_LARGE,
    _KWARGS_DOC,
)
def spectralgpt_mae_vit_large(**kwargs: Any) -> SpectralGPTMAE:
    return _build("spectralgpt_mae_vit_large", VIT_LARGE, None, kwargs)


@register_full_model
@documented(
    "SpectralGPT ViT-Huge masked autoencoder (official shapes), random init.", VIT_HUGE, _KWARGS_DOC
)
def spectralgpt_mae_vit_huge(**kwargs: Any) -> SpectralGPTMAE:
    return _build("spectralgpt_mae_vit_huge", VIT_HUGE, None, kwargs)
