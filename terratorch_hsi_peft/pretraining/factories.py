"""The masked autoencoder registered with TerraTorch: ``spectralgpt_mae_vit_{base,large,huge}``.

They live in ``TERRATORCH_FULL_MODEL_REGISTRY``, so stock ``FullModelFactory`` builds them and
stock ``ReconstructionTask`` trains them::

    model:
      class_path: terratorch.tasks.ReconstructionTask
      init_args:
        model_factory: FullModelFactory
        model_args: {model: spectralgpt_mae_vit_base, num_bands: 12, img_size: 32}

One builder per size, each with its full signature. Every other ``model_args`` key reaches the
builder as a keyword; unknown keys are a TypeError listing the valid ones, and strings that dotted
command-line overrides leave (``"false"``, ``"0.75"``) are read as YAML scalars.
"""

from __future__ import annotations

from typing import Any

from terratorch_hsi_peft.backbones.checkpoint import SPECTRALGPT_PLUS_URL
from terratorch_hsi_peft.backbones.factories import checkpoint_to_load, yaml_arguments
from terratorch_hsi_peft.pretraining.checkpoint import load_mae_checkpoint
from terratorch_hsi_peft.pretraining.mae import OFFICIAL_MASK_RATIO, SpectralGPTMAE
from terratorch_hsi_peft.registry import register_full_model

__all__ = ["spectralgpt_mae_vit_base", "spectralgpt_mae_vit_huge", "spectralgpt_mae_vit_large"]


def _build(
    name: str,
    official_url: str | None,
    *,
    pretrained: bool,
    ckpt_path: str | None,
    ckpt_sha256: str | None,
    **mae_args: Any,
) -> SpectralGPTMAE:
    checkpoint = checkpoint_to_load(name, pretrained, ckpt_path, ckpt_sha256, official_url)
    model = SpectralGPTMAE(**mae_args)
    if checkpoint is not None:
        load_mae_checkpoint(model, checkpoint, sha256=ckpt_sha256)
    return model


_WHERE = "model_args next to 'model'"


@register_full_model
@yaml_arguments(_WHERE)
def spectralgpt_mae_vit_base(
    *,
    pretrained: bool = False,
    ckpt_path: str | None = None,
    ckpt_sha256: str | None = None,
    num_bands: int = 12,
    img_size: int = 128,
    patch_size: int = 8,
    t_patch_size: int = 3,
    embed_dim: int = 768,
    depth: int = 12,
    num_heads: int = 12,
    mlp_ratio: float = 4.0,
    decoder_embed_dim: int = 512,
    decoder_depth: int = 4,
    decoder_num_heads: int = 16,
    mask_ratio: float = OFFICIAL_MASK_RATIO,
    norm_pix_loss: bool = False,
    drop_path_rate: float = 0.0,
) -> SpectralGPTMAE:
    """SpectralGPT ViT-Base masked autoencoder (encoder 768 wide, 12 blocks, 12 heads).

    The arguments of all ``spectralgpt_mae_vit_*`` builders (``model_args`` keys next to
    ``model``); the sizes differ only in the defaults of ``embed_dim``, ``depth`` and
    ``num_heads``.

    Args:
        pretrained: load the released pre-training checkpoint (encoder and decoder) when no
            ``ckpt_path`` is given: SpectralGPT+ (Zenodo record 8412455) for this size; the
            other sizes have none.
        ckpt_path: an official pre-training checkpoint (or an encoder-only export, which starts
            a fresh decoder), file or http(s) URL (cached as the backbone's); loaded with a
            report.
        ckpt_sha256: the checkpoint's expected sha256, checked when given.
        num_bands, img_size, patch_size, t_patch_size, mlp_ratio, drop_path_rate: as for
            :func:`~terratorch_hsi_peft.backbones.spectralgpt_vit_base`.
        embed_dim: encoder token width.
        depth: encoder blocks.
        num_heads: encoder attention heads.
        decoder_embed_dim: decoder token width (the official decoder's).
        decoder_depth: decoder blocks.
        decoder_num_heads: decoder attention heads.
        mask_ratio: share of tokens masked, in (0, 1) (the official pre-training commands).
        norm_pix_loss: per-patch normalised targets (official option).

    Returns:
        The masked autoencoder, with the checkpoint loaded when one is named.
    """
    # locals() is exactly the arguments above: the signature stays their one declaration.
    return _build("spectralgpt_mae_vit_base", SPECTRALGPT_PLUS_URL, **locals())


@register_full_model
@yaml_arguments(_WHERE)
def spectralgpt_mae_vit_large(
    *,
    pretrained: bool = False,
    ckpt_path: str | None = None,
    ckpt_sha256: str | None = None,
    num_bands: int = 12,
    img_size: int = 128,
    patch_size: int = 8,
    t_patch_size: int = 3,
    embed_dim: int = 1024,
    depth: int = 24,
    num_heads: int = 16,
    mlp_ratio: float = 4.0,
    decoder_embed_dim: int = 512,
    decoder_depth: int = 4,
    decoder_num_heads: int = 16,
    mask_ratio: float = OFFICIAL_MASK_RATIO,
    norm_pix_loss: bool = False,
    drop_path_rate: float = 0.0,
) -> SpectralGPTMAE:
    """SpectralGPT ViT-Large masked autoencoder (official shapes: encoder 1024 wide, 24 blocks,
    16 heads), random init.

    No weights were released for this size: ``pretrained=True`` is an error, ``ckpt_path``
    loads your own. The arguments are those of :func:`spectralgpt_mae_vit_base`.
    """
    return _build("spectralgpt_mae_vit_large", None, **locals())


@register_full_model
@yaml_arguments(_WHERE)
def spectralgpt_mae_vit_huge(
    *,
    pretrained: bool = False,
    ckpt_path: str | None = None,
    ckpt_sha256: str | None = None,
    num_bands: int = 12,
    img_size: int = 128,
    patch_size: int = 8,
    t_patch_size: int = 3,
    embed_dim: int = 1280,
    depth: int = 32,
    num_heads: int = 16,
    mlp_ratio: float = 4.0,
    decoder_embed_dim: int = 512,
    decoder_depth: int = 4,
    decoder_num_heads: int = 16,
    mask_ratio: float = OFFICIAL_MASK_RATIO,
    norm_pix_loss: bool = False,
    drop_path_rate: float = 0.0,
) -> SpectralGPTMAE:
    """SpectralGPT ViT-Huge masked autoencoder (official shapes: encoder 1280 wide, 32 blocks,
    16 heads), random init.

    No weights were released for this size: ``pretrained=True`` is an error, ``ckpt_path``
    loads your own. The arguments are those of :func:`spectralgpt_mae_vit_base`.
    """
    return _build("spectralgpt_mae_vit_huge", None, **locals())
