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

from terratorch_hsi_peft.backbones.checkpoint import SPECTRALGPT_PLUS_URL, check_sha256_option
from terratorch_hsi_peft.pretraining.checkpoint import load_mae_checkpoint
from terratorch_hsi_peft.pretraining.mae import OFFICIAL_MASK_RATIO, SpectralGPTMAE
from terratorch_hsi_peft.registry import register_full_model
from terratorch_hsi_peft.utils.cli_values import TEXT_OPTIONS, cli_scalars

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
    valid = {**_DEFAULTS, **arch}
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise TypeError(
            f"{name} got unknown argument(s) {unknown}. Valid model_args next to 'model': "
            f"{sorted(valid)}."
        )
    # "false" from a CLI override is False; a file name or digest of digits stays a string
    options = {**valid, **cli_scalars(kwargs, name, text=TEXT_OPTIONS)}
    pretrained = options.pop("pretrained")
    ckpt_path = options.pop("ckpt_path")
    ckpt_sha256 = options.pop("ckpt_sha256")
    if pretrained and ckpt_path is None:
        if official_url is None:
            raise ValueError(
                f"No pretrained weights were released for {name}; set ckpt_path to your own "
                "checkpoint or use pretrained: false."
            )
        ckpt_path = official_url
    check_sha256_option(name, ckpt_path, ckpt_sha256)
    model = SpectralGPTMAE(**options)
    if ckpt_path is not None:
        load_mae_checkpoint(model, ckpt_path, sha256=ckpt_sha256)
    return model


def _documented(summary: str, arch: dict[str, int]):
    def decorate(factory):
        widths = ", ".join(str(arch[k]) for k in ("embed_dim", "depth", "num_heads"))
        factory.__doc__ = summary + "\n" + _KWARGS_DOC.format(arch=widths)
        return factory

    return decorate


_BASE = {"embed_dim": 768, "depth": 12, "num_heads": 12}
_LARGE = {"embed_dim": 1024, "depth": 24, "num_heads": 16}
_HUGE = {"embed_dim": 1280, "depth": 32, "num_heads": 16}


@register_full_model
@_documented(
    "SpectralGPT ViT-Base masked autoencoder. ``pretrained=True`` without ``ckpt_path`` "
    "continues from SpectralGPT+ (Zenodo record 8412455).",
    _BASE,
)
def spectralgpt_mae_vit_base(**kwargs: Any) -> SpectralGPTMAE:
    return _build("spectralgpt_mae_vit_base", _BASE, SPECTRALGPT_PLUS_URL, kwargs)


@register_full_model
@_documented("SpectralGPT ViT-Large masked autoencoder (official shapes), random init.", _LARGE)
def spectralgpt_mae_vit_large(**kwargs: Any) -> SpectralGPTMAE:
    return _build("spectralgpt_mae_vit_large", _LARGE, None, kwargs)


@register_full_model
@_documented("SpectralGPT ViT-Huge masked autoencoder (official shapes), random init.", _HUGE)
def spectralgpt_mae_vit_huge(**kwargs: Any) -> SpectralGPTMAE:
    return _build("spectralgpt_mae_vit_huge", _HUGE, None, kwargs)
