"""SpectralGPT's masked autoencoder, trainable by TerraTorch's stock ``ReconstructionTask``.

Follows ``models_mae_spectral.py`` of the official code (danfenghong/IEEE_TPAMI_SpectralGPT):
3-D tubelet tokens, per-sample random masking of a ``mask_ratio`` share of all tokens, the
encoder on the kept tokens only, a narrower decoder with its own spatial and spectral position
tables that fills the masked places with a learned ``mask_token``, and the official two-term loss.
The encoder is :class:`~terratorch_hsi_peft.backbones.SpectralGPTEncoder` itself (same band
handling, same state-dict keys), so its weights move to ``spectralgpt_vit_*`` unchanged.

Deviations from the official code, each forced by something the official code cannot do:

- Any band count: the last spectral group is zero-padded (as the encoder does) and padded values
  are left out of the loss (the official code has 12 bands and no padding). With a band count
  that fills whole groups the loss is the official one exactly.
- The official spectral-sum term hard-codes a patch vector of 192 values (3 bands x 8 x 8); here
  it is ``t_patch_size * patch_size**2``.
- Any input size that is a multiple of ``patch_size`` (H != W included): the spatial position
  tables are resized bicubically on the fly (the official model asserts its ``img_size``).
- Targets are every band (the official ``pred_t_dim`` equals the band count in every released
  factory, which makes its band subsampling the identity; other values are not offered).
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
from terratorch.models.model import Model, ReconstructionOutput
from torch import nn

from terratorch_hsi_peft.backbones.factories import keyword_parameters
from terratorch_hsi_peft.backbones.layers import Block, layer_norm
from terratorch_hsi_peft.backbones.pos_embed import resize_spatial_pos_embed
from terratorch_hsi_peft.backbones.spectralgpt import (
    SpectralGPTEncoder,
    check_heads_divide,
    check_positive_ints,
)

__all__ = ["DECODER_PREFIXES", "OFFICIAL_MASK_RATIO", "SpectralGPTMAE"]

#: Mask ratio of the official pre-training commands (fMoW-Sentinel and BigEarthNet stages).
OFFICIAL_MASK_RATIO = 0.9
#: State-dict keys of the MAE that are not the encoder's (official names).
DECODER_PREFIXES = ("mask_token", "decoder_")
#: The encoder's arguments the MAE takes, with their defaults: all but those that shape the
#: features ``SpectralGPTEncoder.forward`` returns, which the MAE does not call.
_ENCODER_PARAMETERS = keyword_parameters(
    SpectralGPTEncoder, leave_out=("out_indices", "group_fusion", "cls_token")
)
_ENCODER_DEFAULTS = {p.name: p.default for p in _ENCODER_PARAMETERS}


class SpectralGPTMAE(Model):
    """SpectralGPT masked autoencoder: the SpectralGPT encoder plus the official MAE decoder.

    ``forward`` returns TerraTorch's ``ReconstructionOutput``:

    - ``loss``: ``{"loss": masked + spectral, "masked_mse": ..., "spectral_sum": ...}``, the
      official objective: the mean squared error over the masked tokens' patch vectors
      (per-patch normalised targets with ``norm_pix_loss``), plus the mean squared error of the
      sum over spectral groups of every spatial patch (all patches, un-normalised targets).
    - ``pred``: the reconstruction in the input's pixel layout, (B, bands, H, W) or
      (B, 1, bands, H, W).
    - ``mask``: (B, bands, H, W), 1 where the pixel's token was masked, 0 where it was kept.

    Args:
        decoder_embed_dim: decoder token width (official: 512).
        decoder_depth: decoder blocks (official: 4).
        decoder_num_heads: decoder attention heads (official: 16).
        mask_ratio: share of tokens masked, in (0, 1) (official recipe: 0.9). The objective is
            the error on the masked tokens, so at least one token per sample must be masked
            and one kept.
        norm_pix_loss: normalise each target patch by its own mean and standard deviation.
        **encoder_args: the arguments of :class:`SpectralGPTEncoder` (the signature lists
            them) but those that shape its returned features (``out_indices``,
            ``group_fusion``, ``cls_token``): the MAE reads the last block's tokens itself.
            ``mlp_ratio`` is the decoder's too.

    Attributes:
        encoder: the :class:`SpectralGPTEncoder` (keys ``patch_embed.*``, ``pos_embed_*``,
            ``blocks.*``, ``norm.*``).
        load_report: the report of the checkpoint loaded into the whole model, or None.
    """

    def __init__(
        self,
        *,
        decoder_embed_dim: int = 512,
        decoder_depth: int = 4,
        decoder_num_heads: int = 16,
        mask_ratio: float = OFFICIAL_MASK_RATIO,
        norm_pix_loss: bool = False,
        **encoder_args: Any,
    ) -> None:
        super().__init__()
        unknown = sorted(set(encoder_args) - set(_ENCODER_DEFAULTS))
        if unknown:
            raise TypeError(
                f"SpectralGPTMAE got unknown argument(s) {unknown}; it takes "
                f"{sorted(inspect.signature(SpectralGPTMAE).parameters)}."
            )
        encoder_args = {**_ENCODER_DEFAULTS, **encoder_args}
        _check_mask_ratio(mask_ratio)
        if not isinstance(norm_pix_loss, bool):
            raise ValueError(f"norm_pix_loss must be true or false, got {norm_pix_loss!r}.")
        check_positive_ints(
            {
                "decoder_embed_dim": decoder_embed_dim,
                "decoder_depth": decoder_depth,
                "decoder_num_heads": decoder_num_heads,
            }
        )
        check_heads_divide(
            "decoder_embed_dim", decoder_embed_dim, "decoder_num_heads", decoder_num_heads
        )
        self.encoder = SpectralGPTEncoder(**encoder_args, out_indices=[-1])
        patch_size, embed_dim = self.encoder.patch_size, self.encoder.embed_dim
        self.patch_size = patch_size  # read by TerraTorch's factories; an int, as they expect
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        groups, grid = self.encoder.num_groups, self.encoder.grid_size
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed_spatial = nn.Parameter(torch.zeros(1, grid**2, decoder_embed_dim))
        self.decoder_pos_embed_temporal = nn.Parameter(torch.zeros(1, groups, decoder_embed_dim))
        self.decoder_blocks = nn.ModuleList(
            Block(decoder_embed_dim, decoder_num_heads, encoder_args["mlp_ratio"])
            for _ in range(decoder_depth)
        )
        self.decoder_norm = layer_norm(decoder_embed_dim)
        values = self.encoder.t_patch_size * patch_size**2  # per token: its tubelet's pixels
        self.decoder_pred = nn.Linear(decoder_embed_dim, values)
        self.load_report = None
        self._init_decoder()

    # The signature lists the encoder's arguments too, typed, for help() and jsonargparse.
    __init__.__signature__ = inspect.Signature(
        [
            inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            *_ENCODER_PARAMETERS,
            *keyword_parameters(__init__, leave_out=("self",)),
        ],
        return_annotation=None,
    )

    def _init_decoder(self) -> None:
        # As the official MAE (the encoder initialises itself the same way).
        nn.init.trunc_normal_(self.decoder_pos_embed_spatial, std=0.02)
        nn.init.trunc_normal_(self.decoder_pos_embed_temporal, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        for module in (self.decoder_embed, self.decoder_blocks, self.decoder_pred):
            for layer in module.modules():
                if isinstance(layer, nn.Linear):
                    nn.init.xavier_uniform_(layer.weight)
                    nn.init.zeros_(layer.bias)

    # -- TerraTorch's Model interface -----------------------------------------------------------

    def freeze_encoder(self) -> None:
        """Stop gradients to the encoder (``ReconstructionTask(freeze_encoder=True)``)."""
        self.encoder.requires_grad_(False)

    def freeze_decoder(self) -> None:
        """Stop gradients to the decoder and ``mask_token``."""
        for name, param in self.named_parameters():
            if name.startswith(DECODER_PREFIXES):
                param.requires_grad_(False)

    # -- forward ----------------------------------------------------------------------------------

    def forward(
        self,
        x: torch.Tensor,
        mask_ratio: float | None = None,
        noise: torch.Tensor | None = None,
    ) -> ReconstructionOutput:
        """Mask, encode, decode and score a batch of cubes.

        Args:
            x: (B, bands, H, W) or (B, 1, bands, H, W).
            mask_ratio: overrides the model's ``mask_ratio`` for this call.
            noise: (B, num_groups * h * w) values whose smallest ``(1 - ratio)`` share per sample
                selects the kept tokens (the official masking; drawn uniformly when None).
        """
        latent, mask, ids_restore, grid = self.forward_encoder(x, mask_ratio, noise)
        pred = self.forward_decoder(latent, ids_restore, grid)
        losses = self.forward_loss(x, pred, mask)
        return ReconstructionOutput(
            loss=losses,
            pred=self.unpatchify(pred, x.shape),
            mask=self._pixel_mask(mask, x.shape),
        )

    def forward_encoder(
        self,
        x: torch.Tensor,
        mask_ratio: float | None = None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, int]]:
        """Encode the kept tokens.

        Returns:
            ``(latent, mask, ids_restore, grid)``: latent (B, kept, embed_dim) after the final
            norm, mask (B, L) with 1 = masked, the permutation that restores token order, and the
            spatial token grid (h, w).
        """
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        _check_mask_ratio(ratio)
        tokens, grid = self.encoder.embed(x)
        batch, length, dim = tokens.shape
        keep = int(length * (1 - ratio))
        if keep < 1:
            raise ValueError(
                f"mask_ratio={ratio} keeps no token of the {length} per sample; lower mask_ratio "
                "or use larger inputs."
            )
        if keep == length:  # a ratio so small that 1 - ratio rounds to 1
            raise ValueError(
                f"mask_ratio={ratio} masks no token of the {length} per sample, so the masked "
                f"loss would be 0/0 (NaN); raise mask_ratio to at least {1 / length:.3g}."
            )
        if noise is None:
            noise = torch.rand(batch, length, device=tokens.device)
        elif tuple(noise.shape) != (batch, length):
            raise ValueError(
                f"noise must have shape (batch, tokens) = {(batch, length)}, got "
                f"{tuple(noise.shape)}."
            )
        ids_shuffle = torch.argsort(noise, dim=1)  # ascending: the smallest are kept
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :keep]
        kept = torch.gather(tokens, 1, ids_keep.unsqueeze(-1).expand(-1, -1, dim))
        mask = torch.ones(batch, length, device=tokens.device, dtype=tokens.dtype)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        for block in self.encoder.blocks:
            kept = block(kept)
        return self.encoder.norm(kept), mask, ids_restore, grid

    def forward_decoder(
        self, latent: torch.Tensor, ids_restore: torch.Tensor, grid: tuple[int, int]
    ) -> torch.Tensor:
        """Predict every token's patch vector, (B, L, t_patch_size * patch_size**2)."""
        x = self.decoder_embed(latent)
        batch, kept, dim = x.shape
        length = ids_restore.shape[1]
        x = torch.cat([x, self.mask_token.expand(batch, length - kept, dim)], dim=1)
        x = torch.gather(x, 1, ids_restore.unsqueeze(-1).expand(-1, -1, dim))
        native = (self.encoder.grid_size, self.encoder.grid_size)
        spatial = resize_spatial_pos_embed(self.decoder_pos_embed_spatial, native, grid)
        table = self.decoder_pos_embed_temporal[:, :, None, :] + spatial[:, None, :, :]
        x = x + table.flatten(1, 2)
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))

    def forward_loss(
        self, x: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The official objective on patch vectors; padded bands count nowhere.

        Returns ``{"loss", "masked_mse", "spectral_sum"}`` (``loss`` is their sum).
        """
        target = self.patchify(x)
        valid = self._valid_values(target)  # (L, V): 0 at zero-padded bands
        groups = self.encoder.num_groups
        batch, length, values = target.shape
        spatial = length // groups
        # Spectral sum of every spatial patch, on raw targets as the official code does.
        pred_sum = (pred * valid).reshape(batch, groups, spatial, values).sum(1)
        target_sum = target.reshape(batch, groups, spatial, values).sum(1)
        valid_sum = valid.reshape(groups, spatial, values).amax(0)
        count = valid.sum(-1)
        if self.norm_pix_loss:
            mean = (target * valid).sum(-1, keepdim=True) / count[:, None]
            var = (((target - mean) * valid) ** 2).sum(-1, keepdim=True)
            var = var / (count[:, None] - 1).clamp(min=1)  # unbiased, as torch.var
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        per_token = (((pred - target) ** 2) * valid).sum(-1) / count
        masked = (per_token * mask).sum() / mask.sum()
        per_patch = (((pred_sum - target_sum) ** 2) * valid_sum).sum(-1) / valid_sum.sum(-1)
        spectral = per_patch.mean()
        return {"loss": masked + spectral, "masked_mse": masked, "spectral_sum": spectral}

    # -- pixel <-> patch layouts ------------------------------------------------------------------

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, bands, H, W) or (B, 1, bands, H, W) -> (B, L, t_patch_size * p * p), tokens
        ``(t h w)`` and values ``(u p q)`` as the official ``patchify``; padded bands are zero."""
        cube = self.encoder._as_cube(x)[:, 0]  # (B, padded bands, H, W)
        batch, bands, height, width = cube.shape
        u, p = self.encoder.t_patch_size, self.encoder.patch_size
        t, h, w = bands // u, height // p, width // p
        patches = cube.reshape(batch, t, u, h, p, w, p).permute(0, 1, 3, 5, 2, 4, 6)
        return patches.reshape(batch, t * h * w, u * p * p)

    def unpatchify(self, tokens: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """Patch vectors (B, L, V) back to the pixel layout of an input of ``shape``."""
        u, p = self.encoder.t_patch_size, self.encoder.patch_size
        height, width = shape[-2:]
        t, h, w = self.encoder.num_groups, height // p, width // p
        batch = tokens.shape[0]
        cube = tokens.reshape(batch, t, h, w, u, p, p).permute(0, 1, 4, 2, 5, 3, 6)
        cube = cube.reshape(batch, t * u, height, width)[:, : self.encoder.num_bands]
        return cube.reshape(shape)

    def _pixel_mask(self, mask: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        u, p = self.encoder.t_patch_size, self.encoder.patch_size
        height, width = shape[-2:]
        grid = mask.reshape(mask.shape[0], self.encoder.num_groups, height // p, width // p)
        pixels = grid.repeat_interleave(u, 1).repeat_interleave(p, 2).repeat_interleave(p, 3)
        return pixels[:, : self.encoder.num_bands]

    def _valid_values(self, target: torch.Tensor) -> torch.Tensor:
        """(L, V) weights: 1 for values of real bands, 0 for the zero-padded ones."""
        u, p = self.encoder.t_patch_size, self.encoder.patch_size
        groups = self.encoder.num_groups
        band = torch.arange(groups * u, device=target.device).reshape(groups, 1, u, 1)
        valid = (band < self.encoder.num_bands).to(target.dtype)
        spatial = target.shape[1] // groups
        return valid.expand(groups, spatial, u, p * p).reshape(groups * spatial, u * p * p)

    # -- official layout ------------------------------------------------------------------------

    def official_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights under the official key names (encoder keys at the top, ``decoder_*``)."""
        return {k.removeprefix("encoder."): v for k, v in self.state_dict().items()}


def _check_mask_ratio(ratio: Any) -> None:
    # 0 is refused, not given a loss of its own: the objective is the mean error over the masked
    # tokens (0/0 = NaN with none), and training on the spectral-sum term alone, or on
    # reconstructing visible tokens, would be another objective than SpectralGPT's, silently.
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or math.isnan(ratio):
        raise ValueError(f"mask_ratio must be a number in (0, 1), got {ratio!r}; set mask_ratio.")
    if ratio == 0:
        raise ValueError(
            "mask_ratio=0 masks no token, so the masked-autoencoder loss (the error on the "
            "masked tokens) is 0/0 = NaN from the first step. Set mask_ratio in (0, 1): the "
            f"official recipe's is {OFFICIAL_MASK_RATIO}."
        )
    if not 0 < ratio < 1:
        raise ValueError(f"mask_ratio must be a number in (0, 1), got {ratio!r}; set mask_ratio.")
