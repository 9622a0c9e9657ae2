"""SpectralGPT backbones registered with TerraTorch: ``spectralgpt_vit_{base,large,huge}``.

In a TerraTorch YAML every ``backbone_<name>`` key of ``model_args`` reaches these factories as
``<name>``. Unknown keys are a TypeError that lists the valid ones. Strings that dotted
command-line overrides leave (``"false"``, ``"2"``) are read as YAML scalars.
"""

from __future__ import annotations

from typing import Any

from terratorch_hsi_peft.backbones.checkpoint import (
    SPECTRALGPT_PLUS_URL,
    check_sha256_option,
    load_checkpoint,
)
from terratorch_hsi_peft.backbones.spectralgpt import SpectralGPTEncoder
from terratorch_hsi_peft.registry import register_backbone
from terratorch_hsi_peft.utils.cli_values import TEXT_OPTIONS, cli_scalars

__all__ = ["spectralgpt_vit_base", "spectralgpt_vit_huge", "spectralgpt_vit_large"]

_COMMON_DEFAULTS: dict[str, Any] = {
    "pretrained": False,
    "ckpt_path": None,
    "ckpt_sha256": None,
    "num_bands": 12,
    "img_size": 128,
    "patch_size": 8,
    "t_patch_size": 3,
    "out_indices": None,
    "group_fusion": "mean",
    "cls_token": True,
    "mlp_ratio": 4.0,
    "drop_path_rate": 0.0,
    # Read by TerraTorch's EncoderDecoderFactory (how inputs are padded to the patch size) and
    # passed on to every backbone; the encoder itself has no use for it.
    "padding": "reflect",
}

_KWARGS_DOC = """
    Keyword arguments (``backbone_<name>`` in YAML), defaults in brackets:
        pretrained (bool) [False]: load the released weights when no ``ckpt_path`` is given.
        ckpt_path (str | None) [None]: a local checkpoint or an http(s) URL (cached under
            ``$TERRATORCH_HSI_PEFT_CACHE`` or ``torch.hub.get_dir()/checkpoints``, downloaded
            atomically, one folder per URL); loaded whenever given.
        ckpt_sha256 (str | None) [None]: the checkpoint's expected sha256, checked when given
            (also against a file already in the cache, which is downloaded again if it differs).
        num_bands (int) [12]: input bands (12 PCA components on the paper's route, all bands on
            the native route); the last spectral group is zero-padded when needed.
        img_size (int) [128]: native square input size (the checkpoint's); other multiples of
            ``patch_size`` work by resizing the spatial position table on the fly.
        patch_size (int) [8]: spatial patch size.
        t_patch_size (int) [3]: bands per spectral group.
        out_indices (list[int] | None) [None]: layers whose features are returned (negative counts
            from the end); None: every layer, as TerraTorch's ViTs (necks such as SelectIndices
            choose). Only the layers up to the deepest one listed are run.
        group_fusion (str) ["mean"]: "mean", "concat" or "learned" (see SpectralGPTEncoder).
        cls_token (bool) [True]: lead each feature with one token (the mean of its tokens) where
            TerraTorch's ViTs have their class token, so ReshapeTokensToImage works with its
            defaults; False: patch tokens only (then remove_cls_token: false).
        embed_dim, depth, num_heads (int): width, blocks and heads [{arch}].
        mlp_ratio (float) [4.0]: MLP hidden width / embed_dim.
        drop_path_rate (float) [0.0]: stochastic depth, increasing linearly over the blocks.
        padding (str) ["reflect"]: read by TerraTorch's model to pad inputs; unused here.
"""


def read_options(
    name: str, defaults: dict[str, Any], kwargs: dict[str, Any], where: str
) -> dict[str, Any]:
    """``defaults`` updated with ``kwargs``: unknown keys are a TypeError listing the valid ones
    (``where`` says how they are spelled in YAML); strings that dotted CLI overrides leave are read
    as YAML scalars ("false" is False), while file names and digests of digits stay strings."""
    unknown = sorted(set(kwargs) - set(defaults))
    if unknown:
        raise TypeError(
            f"{name} got unknown argument(s) {unknown}. Valid arguments ({where}): "
            f"{sorted(defaults)}."
        )
    return {**defaults, **cli_scalars(kwargs, name, text=TEXT_OPTIONS)}


def pop_checkpoint(
    name: str, options: dict[str, Any], official_url: str | None
) -> tuple[str | None, str | None]:
    """Remove ``pretrained``, ``ckpt_path`` and ``ckpt_sha256`` from ``options``; return the
    checkpoint to load (``official_url`` when only ``pretrained`` is set) and its sha256."""
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
    return ckpt_path, ckpt_sha256


def documented(summary: str, arch: dict[str, int], kwargs_doc: str):
    """Give a factory its docstring: ``summary`` plus ``kwargs_doc`` with ``arch``'s widths."""

    def decorate(factory):
        widths = ", ".join(str(arch[k]) for k in ("embed_dim", "depth", "num_heads"))
        factory.__doc__ = summary + "\n" + kwargs_doc.format(arch=widths)
        return factory

    return decorate


#: Widths of the official architectures.
VIT_BASE = {"embed_dim": 768, "depth": 12, "num_heads": 12}
VIT_LARGE = {"embed_dim": 1024, "depth": 24, "num_heads": 16}
VIT_HUGE = {"embed_dim": 1280, "depth": 32, "num_heads": 16}


def _build(name: str, arch: dict[str, int], official_url: str | None, kwargs: dict) -> Any:
    options = read_options(name, {**_COMMON_DEFAULTS, **arch}, kwargs, "backbone_<name> in YAML")
    ckpt_path, ckpt_sha256 = pop_checkpoint(name, options, official_url)
    options.pop("padding")
    model = SpectralGPTEncoder(**options)
    if ckpt_path is not None:
        load_checkpoint(model, ckpt_path, sha256=ckpt_sha256)
    return model


@register_backbone
@documented(
    "SpectralGPT ViT-Base, the released model. ``pretrained=True`` without ``ckpt_path`` "
    "downloads SpectralGPT+ (Zenodo record 8412455).",
    VIT_BASE,
    _KWARGS_DOC,
)
def spectralgpt_vit_base(**kwargs: Any) -> SpectralGPTEncoder:
    return _build("spectralgpt_vit_base", VIT_BASE, SPECTRALGPT_PLUS_URL, kwargs)


@register_backbone
@documented(
    "SpectralGPT ViT-Large shapes (official), random init: no weights released.",
    VIT_LARGE,
    _KWARGS_DOC,
)
def spectralgpt_vit_large(**kwargs: Any) -> SpectralGPTEncoder:
    return _build("spectralgpt_vit_large", VIT_LARGE, None, kwargs)


@register_backbone
@documented(
    "SpectralGPT ViT-Huge shapes (official), random init: no weights released.",
    VIT_HUGE,
    _KWARGS_DOC,
)
def spectralgpt_vit_huge(**kwargs: Any) -> SpectralGPTEncoder:
    return _build("spectralgpt_vit_huge", VIT_HUGE, None, kwargs)
