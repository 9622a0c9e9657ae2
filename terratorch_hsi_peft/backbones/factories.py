"""SpectralGPT backbones registered with TerraTorch: ``spectralgpt_vit_{base,large,huge}``.

One factory per size, as timm's, each with its full signature. In a TerraTorch YAML every
``backbone_<name>`` key of ``model_args`` reaches them as the keyword ``<name>``. Unknown keys are
a TypeError that lists the valid ones, and strings that dotted command-line overrides leave
(``"false"``, ``"2"``) are read as YAML scalars (:func:`yaml_arguments`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from terratorch_hsi_peft.backbones.checkpoint import (
    SPECTRALGPT_PLUS_URL,
    check_sha256_option,
    load_checkpoint,
)
from terratorch_hsi_peft.backbones.spectralgpt import SpectralGPTEncoder
from terratorch_hsi_peft.registry import register_backbone
from terratorch_hsi_peft.utils.cli_values import TEXT_OPTIONS, cli_scalars

__all__ = ["spectralgpt_vit_base", "spectralgpt_vit_huge", "spectralgpt_vit_large"]

Factory = TypeVar("Factory", bound=Callable[..., Any])


def yaml_arguments(where: str) -> Callable[[Factory], Factory]:
    """Let a keyword-only factory take its arguments as TerraTorch hands them over from YAML.

    An unknown name is a TypeError that lists the factory's parameters (``where`` says how they
    are spelled in YAML), instead of Python's bare "unexpected keyword argument"; strings that
    dotted CLI overrides leave are read as YAML scalars ("false" is False), while file names and
    digests (``TEXT_OPTIONS``) stay strings. The factory keeps its signature and docstring.
    """

    def decorate(factory: Factory) -> Factory:
        parameters = inspect.signature(factory).parameters
        name = factory.__name__

        @functools.wraps(factory)
        def build(**kwargs: Any) -> Any:
            unknown = sorted(set(kwargs) - set(parameters))
            if unknown:
                raise TypeError(
                    f"{name} got unknown argument(s) {unknown}. Valid arguments ({where}): "
                    f"{sorted(parameters)}."
                )
            return factory(**cli_scalars(kwargs, name, text=TEXT_OPTIONS))

        return build  # type: ignore[return-value]

    return decorate


def checkpoint_to_load(
    name: str,
    pretrained: bool,
    ckpt_path: str | None,
    ckpt_sha256: str | None,
    official_url: str | None,
) -> str | None:
    """The checkpoint a factory loads: ``ckpt_path``, else ``official_url`` when ``pretrained``.

    Raises:
        ValueError: ``pretrained`` for a size without released weights, or a ``ckpt_sha256``
            without a checkpoint or that is no hex digest.
    """
    if pretrained and ckpt_path is None:
        if official_url is None:
            raise ValueError(
                f"No pretrained weights were released for {name}; set ckpt_path to your own "
                "checkpoint or use pretrained: false."
            )
        ckpt_path = official_url
    check_sha256_option(name, ckpt_path, ckpt_sha256)
    return ckpt_path


def _build(
    name: str,
    official_url: str | None,
    *,
    pretrained: bool,
    ckpt_path: str | None,
    ckpt_sha256: str | None,
    padding: str,
    **encoder_args: Any,
) -> SpectralGPTEncoder:
    del padding  # TerraTorch's model pads the inputs with it; the encoder has no use for it
    checkpoint = checkpoint_to_load(name, pretrained, ckpt_path, ckpt_sha256, official_url)
    model = SpectralGPTEncoder(**encoder_args)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, sha256=ckpt_sha256)
    return model


_WHERE = "backbone_<name> in YAML"


@register_backbone
@yaml_arguments(_WHERE)
def spectralgpt_vit_base(
    *,
    pretrained: bool = False,
    ckpt_path: str | None = None,
    ckpt_sha256: str | None = None,
    num_bands: int = 12,
    img_size: int = 128,
    patch_size: int = 8,
    t_patch_size: int = 3,
    out_indices: Sequence[int] | None = None,
    group_fusion: str = "mean",
    cls_token: bool = True,
    embed_dim: int = 768,
    depth: int = 12,
    num_heads: int = 12,
    mlp_ratio: float = 4.0,
    drop_path_rate: float = 0.0,
    padding: str = "reflect",
) -> SpectralGPTEncoder:
    """SpectralGPT ViT-Base, the released model (768 wide, 12 blocks, 12 heads).

    The arguments of all ``spectralgpt_vit_*`` factories (``backbone_<name>`` in YAML); the
    sizes differ only in the defaults of ``embed_dim``, ``depth`` and ``num_heads``.

    Args:
        pretrained: load the released weights when no ``ckpt_path`` is given: SpectralGPT+
            (Zenodo record 8412455) for this size; the other sizes have none.
        ckpt_path: a local checkpoint or an http(s) URL (cached under
            ``$TERRATORCH_HSI_PEFT_CACHE`` or ``torch.hub.get_dir()/checkpoints``, downloaded
            atomically, one folder per URL); loaded whenever given.
        ckpt_sha256: the checkpoint's expected sha256, checked when given (also against a file
            already in the cache, which is downloaded again if it differs).
        num_bands: input bands (12 PCA components on the paper's route, all bands on the
            native route); the last spectral group is zero-padded when needed.
        img_size: native square input size (the checkpoint's); other multiples of
            ``patch_size`` work by resizing the spatial position table on the fly.
        patch_size: spatial patch size.
        t_patch_size: bands per spectral group.
        out_indices: layers whose features are returned (negative counts from the end); None:
            every layer, as TerraTorch's ViTs (necks such as SelectIndices choose). Only the
            layers up to the deepest one listed are run.
        group_fusion: "mean", "concat" or "learned" (see :class:`SpectralGPTEncoder`).
        cls_token: lead each feature with one token (the mean of its tokens) where TerraTorch's
            ViTs have their class token, so ReshapeTokensToImage works with its defaults;
            False: patch tokens only (then ``remove_cls_token: false``).
        embed_dim: token width.
        depth: transformer blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / embed_dim.
        drop_path_rate: stochastic depth, increasing linearly over the blocks.
        padding: read by TerraTorch's model to pad inputs to a multiple of ``patch_size``;
            unused here.

    Returns:
        The encoder, with the checkpoint loaded when one is named.
    """
    # locals() is exactly the arguments above: the signature stays their one declaration.
    return _build("spectralgpt_vit_base", SPECTRALGPT_PLUS_URL, **locals())


@register_backbone
@yaml_arguments(_WHERE)
def spectralgpt_vit_large(
    *,
    pretrained: bool = False,
    ckpt_path: str | None = None,
    ckpt_sha256: str | None = None,
    num_bands: int = 12,
    img_size: int = 128,
    patch_size: int = 8,
    t_patch_size: int = 3,
    out_indices: Sequence[int] | None = None,
    group_fusion: str = "mean",
    cls_token: bool = True,
    embed_dim: int = 1024,
    depth: int = 24,
    num_heads: int = 16,
    mlp_ratio: float = 4.0,
    drop_path_rate: float = 0.0,
    padding: str = "reflect",
) -> SpectralGPTEncoder:
    """SpectralGPT ViT-Large shapes (official: 1024 wide, 24 blocks, 16 heads), random init.

    No weights were released for this size: ``pretrained=True`` is an error, ``ckpt_path``
    loads your own. The arguments are those of :func:`spectralgpt_vit_base`.
    """
    return _build("spectralgpt_vit_large", None, **locals())


@register_backbone
@yaml_arguments(_WHERE)
def spectralgpt_vit_huge(
    *,
    pretrained: bool = False,
    ckpt_path: str | None = None,
    ckpt_sha256: str | None = None,
    num_bands: int = 12,
    img_size: int = 128,
    patch_size: int = 8,
    t_patch_size: int = 3,
    out_indices: Sequence[int] | None = None,
    group_fusion: str = "mean",
    cls_token: bool = True,
    embed_dim: int = 1280,
    depth: int = 32,
    num_heads: int = 16,
    mlp_ratio: float = 4.0,
    drop_path_rate: float = 0.0,
    padding: str = "reflect",
) -> SpectralGPTEncoder:
    """SpectralGPT ViT-Huge shapes (official: 1280 wide, 32 blocks, 16 heads), random init.

    No weights were released for this size: ``pretrained=True`` is an error, ``ckpt_path``
    loads your own. The arguments are those of :func:`spectralgpt_vit_base`.
    """
    return _build("spectralgpt_vit_huge", None, **locals())
