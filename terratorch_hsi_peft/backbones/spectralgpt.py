"""The SpectralGPT encoder, for hyperspectral cubes with any number of bands.

SpectralGPT: Spectral Remote Sensing Foundation Model. D. Hong, B. Zhang, X. Li, Y. Li, C. Li,
J. Yao, N. Yokoya, H. Li, P. Ghamisi, X. Jia, A. Plaza, P. Gamba, J. A. Benediktsson,
J. Chanussot. IEEE TPAMI 46(8), 2024. doi:10.1109/TPAMI.2024.3362475.
Official code: https://github.com/danfenghong/IEEE_TPAMI_SpectralGPT

The encoder is the one of the official masked autoencoder (``models_mae_spectral.py``): a 3-D
patch embedding of spectral tubelets (``t_patch_size`` bands x ``patch_size`` x ``patch_size``
pixels), separate learned spatial and spectral position tables summed per token, pre-norm
transformer blocks with separate q/k/v Linears, LayerNorm eps 1e-6, no class token. Tokens are
ordered spectral-group-major, ``(t h w)``.

Band policy: a band count that is not a multiple of ``t_patch_size`` is zero-padded at the end
of the band axis inside ``forward`` (the last spectral group holds the remaining bands plus
zeros); ``num_groups`` and ``band_padding`` say how many groups and padded bands there are.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from terratorch_hsi_peft.adapters.io import carry_origin, random_init_origin
from terratorch_hsi_peft.backbones.layers import Block, PatchEmbed3D, layer_norm
from terratorch_hsi_peft.backbones.pos_embed import resize_spatial_pos_embed

__all__ = ["GROUP_FUSIONS", "SIZES", "SpectralGPTEncoder", "TokenFeatures"]

logger = logging.getLogger(__name__)

#: How the spectral groups of a layer's tokens become the features handed to necks and decoders.
GROUP_FUSIONS = ("mean", "concat", "learned")

#: What the official sizes change, as timm lists its sizes: only what differs. Every other
#: argument of the ``spectralgpt_vit_*`` and ``spectralgpt_mae_vit_*`` factories is the same for
#: all sizes. The encoder's own defaults are base's, the size with released weights.
SIZES: dict[str, dict[str, int]] = {
    "base": {"embed_dim": 768, "depth": 12, "num_heads": 12},
    "large": {"embed_dim": 1024, "depth": 24, "num_heads": 16},
    "huge": {"embed_dim": 1280, "depth": 32, "num_heads": 16},
}


class TokenFeatures(list):
    """The features ``SpectralGPTEncoder.forward`` returns: a list of token tensors that also
    carries ``grid``, the spatial token grid (h, w) of the input they came from.

    ``prepare_features_for_image_model`` reads the grid from here, so the encoder keeps no state
    between calls and never guesses a non-square grid from a token count.
    """

    def __init__(self, features: Iterable[torch.Tensor], grid: tuple[int, int]) -> None:
        super().__init__(features)
        self.grid = grid


class SpectralGPTEncoder(nn.Module):
    """SpectralGPT ViT encoder returning every block's features (TerraTorch backbone).

    Input: (B, num_bands, H, W) as TerraTorch passes images, or (B, 1, num_bands, H, W) as the
    official code does. H and W must be multiples of ``patch_size``; a size other than
    ``img_size`` works by resizing the spatial position table bicubically on the fly.

    Output of ``forward``, as TerraTorch's ViTs (Prithvi) give it: one tensor per entry of
    ``out_indices`` (by default every block, so necks such as ``SelectIndices`` choose), in a
    :class:`TokenFeatures` list that also carries the token grid, each
    ``(B, 1 + N, C)``: a leading token where those ViTs put their class token, then the N patch
    tokens after group fusion. SpectralGPT has no class token; the leading token is the mean of
    the N tokens (not a learned parameter), so ``ReshapeTokensToImage`` with its default
    ``remove_cls_token: true`` drops it, and ``AggregateTokens`` gives the mean of the patch
    tokens with ``pooling: mean`` and with ``pooling: CLS``. ``cls_token=False`` returns the N
    tokens alone. The N tokens, by ``group_fusion``:

    - ``concat``: (num_groups * h * w) tokens of embed_dim, laid out ``(t h w)``, so that
      ``ReshapeTokensToImage(effective_time_dim=num_groups)`` gives (B, num_groups * embed_dim,
      h, w) images; ``out_channels`` = num_groups * embed_dim.
    - ``mean``: the mean over spectral groups, h * w tokens; ``out_channels`` = embed_dim.
    - ``learned``: a learned weighted sum over groups (``Linear(num_groups, 1)`` per returned
      layer, as the original segmentation model; initialised to the mean), h * w tokens. Set
      ``out_indices`` to the layers the necks use: a fusion layer whose output no neck reads
      gets no gradient (which DDP reports as an unused parameter).

    The final LayerNorm ``norm`` is applied to the last layer's output when it is returned.
    Blocks after the deepest returned layer are not run (their parameters get no gradient).

    These arguments are declared here only: the ``spectralgpt_vit_*`` and
    ``spectralgpt_mae_vit_*`` factories and ``SpectralGPTMAE`` take them over, typed and with
    this documentation, each size with its defaults from :data:`SIZES`.

    Args:
        num_bands: input bands (12 PCA components on the paper's route, all bands on the
            native route); the last spectral group is zero-padded when needed.
        img_size: native square input size (the checkpoint's); other multiples of
            ``patch_size`` work by resizing the spatial position table on the fly.
        patch_size: spatial patch size.
        t_patch_size: bands per spectral group.
        embed_dim: token width.
        depth: transformer blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / embed_dim.
        drop_path_rate: stochastic depth, increasing linearly over the blocks.
        out_indices: layers whose features are returned (negative counts from the end); None:
            every layer, as TerraTorch's ViTs (necks such as SelectIndices choose). Only the
            layers up to the deepest one listed are run.
        group_fusion: "mean", "concat" or "learned" (see :class:`SpectralGPTEncoder`).
        cls_token: lead each feature with one token (the mean of its tokens) where TerraTorch's
            ViTs have their class token, so ReshapeTokensToImage works with its defaults;
            False: patch tokens only (then ``remove_cls_token: false``).

    Attributes:
        patch_size: spatial patch size (an int; TerraTorch pads inputs to a multiple of it).
        num_groups: number of spectral groups, ``ceil(num_bands / t_patch_size)``.
        band_padding: zero bands appended to fill the last group.
        out_channels: channels of each returned feature.
        trainable_with_adapters: parameter-name prefixes (relative to this module) that must stay
            trainable when the encoder is frozen for PEFT: ``["fusion_layers"]`` with the
            learned fusion, else empty.
        load_report: the :class:`~terratorch_hsi_peft.backbones.checkpoint.LoadReport` of the
            checkpoint loaded into the encoder, or None.
        weights_origin: where the weights came from, recorded in adapter files trained on the
            encoder: "random init, seed N" (Lightning's global seed) until a checkpoint is
            loaded, then the checkpoint and its sha256. It travels in state dicts, so loading
            a training run's checkpoint restores the origin of its weights.
    """

    def __init__(
        self,
        num_bands: int = 12,
        img_size: int = 128,
        patch_size: int = 8,
        t_patch_size: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        out_indices: Sequence[int] | None = None,
        group_fusion: str = "mean",
        cls_token: bool = True,
    ) -> None:
        super().__init__()
        _check_config(num_bands, img_size, patch_size, t_patch_size, embed_dim, depth, num_heads)
        if group_fusion not in GROUP_FUSIONS:
            raise ValueError(
                f"group_fusion={group_fusion!r} is not one of {list(GROUP_FUSIONS)}; set "
                "group_fusion (backbone_group_fusion in YAML) to one of them."
            )
        self.num_bands = num_bands
        self.img_size = img_size
        self.patch_size = patch_size
        self.t_patch_size = t_patch_size
        self.embed_dim = embed_dim
        self.depth = depth
        self.grid_size = img_size // patch_size
        self.num_groups = math.ceil(num_bands / t_patch_size)
        self.band_padding = self.num_groups * t_patch_size - num_bands
        self.out_indices = _normalise_out_indices(out_indices, depth)
        self.group_fusion = group_fusion
        if not isinstance(cls_token, bool):
            raise ValueError(
                f"cls_token must be true or false, got {cls_token!r}; set cls_token "
                "(backbone_cls_token in YAML) to a boolean."
            )
        self.cls_token = cls_token

        self.patch_embed = PatchEmbed3D(patch_size, t_patch_size, embed_dim)
        self.pos_embed_spatial = nn.Parameter(torch.zeros(1, self.grid_size**2, embed_dim))
        self.pos_embed_temporal = nn.Parameter(torch.zeros(1, self.num_groups, embed_dim))
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, drop_path=rate) for rate in rates
        )
        self.norm = layer_norm(embed_dim)
        self.fusion_layers = (
            nn.ModuleList(nn.Linear(self.num_groups, 1) for _ in self.out_indices)
            if group_fusion == "learned"
            else None
        )
        self.trainable_with_adapters: list[str] = (
            ["fusion_layers"] if group_fusion == "learned" else []
        )
        width = embed_dim * self.num_groups if group_fusion == "concat" else embed_dim
        self.out_channels = [width] * len(self.out_indices)
        self.load_report = None
        carry_origin(self, random_init_origin())  # a resumed run takes the checkpoint's
        self._init_weights()
        logger.info(
            "SpectralGPT encoder: %d bands -> %d spectral groups of %d bands%s; features of "
            "layers %s fused by %r, %s channels each.",
            num_bands,
            self.num_groups,
            t_patch_size,
            f" (last group zero-padded with {self.band_padding})" if self.band_padding else "",
            self.out_indices,
            group_fusion,
            width,
        )

    def _init_weights(self) -> None:
        # As the official MAE: xavier-uniform Linears and tubelet kernel, trunc-normal tables.
        nn.init.trunc_normal_(self.pos_embed_spatial, std=0.02)
        nn.init.trunc_normal_(self.pos_embed_temporal, std=0.02)
        kernel = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(kernel.view(kernel.shape[0], -1))
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        if self.fusion_layers is not None:
            for layer in self.fusion_layers:  # start as the plain mean over groups
                nn.init.constant_(layer.weight, 1.0 / self.num_groups)
                nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> TokenFeatures:
        """Encode a cube; return the fused tokens of each layer in ``out_indices``."""
        cube = self._as_cube(x)
        grid = (cube.shape[-2] // self.patch_size, cube.shape[-1] // self.patch_size)
        tokens = self.patch_embed(cube) + self._pos_embed(grid)
        features = {}
        last = max(self.out_indices)
        for index, block in enumerate(self.blocks[: last + 1]):
            tokens = block(tokens)
            if index in self.out_indices:
                features[index] = self.norm(tokens) if index == self.depth - 1 else tokens
        fused = [
            self._fuse(features[index], position, grid)
            for position, index in enumerate(self.out_indices)
        ]
        if self.cls_token:
            fused = [torch.cat([f.mean(dim=1, keepdim=True), f], dim=1) for f in fused]
        return TokenFeatures(fused, grid)

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Tubelet tokens of a cube with both position tables added, before any block.

        Returns ``(tokens, grid)``: tokens (B, num_groups * h * w, embed_dim) laid out ``(t h w)``,
        and the spatial token grid (h, w). The masked autoencoder
        (:class:`~terratorch_hsi_peft.pretraining.SpectralGPTMAE`) masks these tokens.
        """
        cube = self._as_cube(x)
        grid = (cube.shape[-2] // self.patch_size, cube.shape[-1] // self.patch_size)
        return self.patch_embed(cube) + self._pos_embed(grid), grid

    def prepare_features_for_image_model(
        self, features: list[torch.Tensor], grid: tuple[int, int] | None = None
    ) -> list[torch.Tensor]:
        """Turn the tokens ``forward`` returned into (B, out_channel, h, w) images.

        For use without necks; equivalent to ``ReshapeTokensToImage(effective_time_dim=num_groups)``
        with ``concat`` and ``ReshapeTokensToImage()`` otherwise (``remove_cls_token: false`` with
        ``cls_token=False``). The token grid (h, w) is ``grid`` when given, else the one the
        :class:`TokenFeatures` from ``forward`` carry (TerraTorch passes them on unchanged).
        """
        if grid is None:
            grid = getattr(features, "grid", None)
        if grid is None:
            raise ValueError(
                "prepare_features_for_image_model needs the token grid: pass the list forward "
                "returned (a TokenFeatures, which carries it), or grid=(height // patch_size, "
                "width // patch_size) of the input."
            )
        height, width = grid
        groups = self.num_groups if self.group_fusion == "concat" else 1
        images = []
        for tokens in features:
            if self.cls_token:
                tokens = tokens[:, 1:]
            batch, count, dim = tokens.shape
            if count != groups * height * width:
                raise ValueError(
                    f"{count} tokens per feature do not fill a {height}x{width} grid"
                    f"{f' of {groups} spectral groups' if groups > 1 else ''}; pass the features "
                    "of one forward call together with that call's grid."
                )
            image = tokens.reshape(batch, groups, height, width, dim).permute(0, 1, 4, 2, 3)
            images.append(image.reshape(batch, groups * dim, height, width))
        return images

    def _as_cube(self, x: torch.Tensor) -> torch.Tensor:
        """Check the input; return (B, 1, bands padded to whole groups, H, W)."""
        if x.dim() == 4:
            x = x.unsqueeze(1)
        elif x.dim() != 5 or x.shape[1] != 1:
            raise ValueError(
                f"SpectralGPT expects (B, bands, H, W) or (B, 1, bands, H, W), got shape "
                f"{tuple(x.shape)}."
            )
        bands, height, width = x.shape[2:]
        if bands != self.num_bands:
            raise ValueError(
                f"The input has {bands} bands but the encoder was built with "
                f"num_bands={self.num_bands}. Set num_bands={bands} (backbone_num_bands in "
                f"YAML), or make the data pipeline deliver {self.num_bands} bands (e.g. "
                f"{self.num_bands} PCA components)."
            )
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"Input size {height}x{width} is not divisible by patch_size={self.patch_size}. "
                f"Crop or pad images to a multiple of {self.patch_size} (TerraTorch's "
                "EncoderDecoderFactory models pad automatically) or change patch_size."
            )
        if self.band_padding:
            x = F.pad(x, (0, 0, 0, 0, 0, self.band_padding))
        return x

    def _pos_embed(self, grid: tuple[int, int]) -> torch.Tensor:
        """Spatial + spectral table for every token, (1, num_groups * h * w, embed_dim)."""
        native = (self.grid_size, self.grid_size)
        spatial = resize_spatial_pos_embed(self.pos_embed_spatial, native, grid)
        table = self.pos_embed_temporal[:, :, None, :] + spatial[:, None, :, :]
        return table.flatten(1, 2)

    def _fuse(self, tokens: torch.Tensor, position: int, grid: tuple[int, int]) -> torch.Tensor:
        if self.group_fusion == "concat":
            return tokens
        groups = tokens.unflatten(1, (self.num_groups, grid[0] * grid[1]))  # (B, t, h*w, D)
        if self.group_fusion == "mean":
            return groups.mean(dim=1)
        weights = self.fusion_layers[position]
        return weights(groups.permute(0, 2, 3, 1)).squeeze(-1)


def _check_config(
    num_bands: int,
    img_size: int,
    patch_size: int,
    t_patch_size: int,
    embed_dim: int,
    depth: int,
    num_heads: int,
) -> None:
    sizes = {
        "num_bands": num_bands,
        "img_size": img_size,
        "patch_size": patch_size,
        "t_patch_size": t_patch_size,
        "embed_dim": embed_dim,
        "depth": depth,
        "num_heads": num_heads,
    }
    check_positive_ints(sizes)
    if img_size % patch_size:
        raise ValueError(
            f"img_size={img_size} is not divisible by patch_size={patch_size}; set img_size to a "
            f"multiple of {patch_size} (e.g. {img_size // patch_size * patch_size or patch_size})."
        )
    check_heads_divide("embed_dim", embed_dim, "num_heads", num_heads)


def check_positive_ints(sizes: dict[str, object]) -> None:
    """Each value of ``sizes`` must be a positive int (not a bool); the error names the key."""
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}; set {name}.")


def check_heads_divide(width_name: str, width: int, heads_name: str, heads: int) -> None:
    """Attention heads must divide the width they split."""
    if width % heads:
        raise ValueError(
            f"{width_name}={width} is not divisible by {heads_name}={heads}; set {heads_name} to "
            f"a divisor of {width_name}."
        )


def _normalise_out_indices(out_indices: Sequence[int] | None, depth: int) -> list[int]:
    if out_indices is None:
        return list(range(depth))
    if isinstance(out_indices, int | str) or len(out_indices) == 0:
        raise ValueError(
            f"out_indices must be a non-empty list of layer indices, got {out_indices!r}; e.g. "
            f"out_indices=[-1] for the last layer, or null for all {depth}."
        )
    normalised = []
    for index in out_indices:
        if isinstance(index, bool) or not isinstance(index, int) or not -depth <= index < depth:
            raise ValueError(
                f"out_indices entry {index!r} is not a layer of this depth-{depth} encoder; use "
                f"ints in [{-depth}, {depth - 1}] (negative counts from the end)."
            )
        normalised.append(index % depth)
    return normalised
