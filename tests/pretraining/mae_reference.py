"""Independent reference for the masked-autoencoder tests (never imported by the package).

``official_mae_forward`` is the official pre-training forward (``MaskedAutoencoderViT`` of
``models_mae_spectral.py`` in danfenghong/IEEE_TPAMI_SpectralGPT, with ``util/video_vit.py``
blocks, ``sep_pos_embed=True``, no class token, ``pred_t_dim`` = bands) written out with
functional ops on a state dict in the official key layout: ``random_masking`` from given noise,
``forward_encoder``, ``forward_decoder`` and ``forward_loss`` (including its hard-coded
192-value patch vector, so it holds for the official 3 x 8 x 8 tubelet only).
``official_mae_state_dict`` builds such a state dict with random values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

BLOCK_SHAPES = {
    "norm1": "norm",
    "attn.q": "square",
    "attn.k": "square",
    "attn.v": "square",
    "attn.proj": "square",
    "norm2": "norm",
    "mlp.fc1": "up",
    "mlp.fc2": "down",
}


def _block(sd: dict, prefix: str, x: torch.Tensor, heads: int) -> torch.Tensor:
    n, length, c = x.shape

    def lin(name, h):
        return F.linear(h, sd[prefix + name + ".weight"], sd[prefix + name + ".bias"])

    def ln(name, h):
        return F.layer_norm(
            h, (c,), sd[prefix + name + ".weight"], sd[prefix + name + ".bias"], 1e-6
        )

    h = ln("norm1", x)
    q, k, v = (
        lin(name, h).reshape(n, length, heads, c // heads).permute(0, 2, 1, 3)
        for name in ("attn.q", "attn.k", "attn.v")
    )
    attn = ((q @ k.transpose(-2, -1)) * (c // heads) ** -0.5).softmax(dim=-1)
    x = x + lin("attn.proj", (attn @ v).transpose(1, 2).reshape(n, length, c))
    return x + lin("mlp.fc2", F.gelu(lin("mlp.fc1", ln("norm2", x))))


def official_mae_forward(
    sd: dict[str, torch.Tensor],
    imgs: torch.Tensor,
    noise: torch.Tensor,
    mask_ratio: float,
    depth: int,
    heads: int,
    decoder_depth: int,
    decoder_heads: int,
    norm_pix_loss: bool = False,
) -> dict[str, torch.Tensor]:
    """latent, pred, mask and loss of the official MAE for imgs (N, bands, H, W)."""
    # forward_encoder
    x = torch.unsqueeze(imgs, dim=1)
    weight = sd["patch_embed.proj.weight"]
    x = F.conv3d(x, weight, sd["patch_embed.proj.bias"], stride=tuple(weight.shape[2:]))
    x = torch.einsum("ncts->ntsc", x.flatten(3))
    n, t, spatial, c = x.shape
    x = x.reshape(n, t * spatial, c)
    length = t * spatial
    len_keep = int(length * (1 - mask_ratio))
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :len_keep]
    x = torch.gather(x, dim=1, index=ids_keep.unsqueeze(-1).repeat(1, 1, c))
    mask = torch.ones([n, length], dtype=imgs.dtype)
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, dim=1, index=ids_restore)
    pos = sd["pos_embed_spatial"].repeat(1, t, 1) + torch.repeat_interleave(
        sd["pos_embed_temporal"], spatial, dim=1
    )
    pos = pos.expand(n, -1, -1)
    pos = torch.gather(pos, dim=1, index=ids_keep.unsqueeze(-1).repeat(1, 1, c))
    x = x + pos
    for i in range(depth):
        x = _block(sd, f"blocks.{i}.", x, heads)
    latent = F.layer_norm(x, (c,), sd["norm.weight"], sd["norm.bias"], 1e-6)

    # forward_decoder
    x = F.linear(latent, sd["decoder_embed.weight"], sd["decoder_embed.bias"])
    cd = x.shape[-1]
    mask_tokens = sd["mask_token"].repeat(n, length - x.shape[1], 1)
    x_ = torch.cat([x, mask_tokens], dim=1)
    x = torch.gather(x_, dim=1, index=ids_restore.unsqueeze(-1).repeat(1, 1, cd))
    x = x + (
        sd["decoder_pos_embed_spatial"].repeat(1, t, 1)
        + torch.repeat_interleave(sd["decoder_pos_embed_temporal"], spatial, dim=1)
    )
    for i in range(decoder_depth):
        x = _block(sd, f"decoder_blocks.{i}.", x, decoder_heads)
    x = F.layer_norm(x, (cd,), sd["decoder_norm.weight"], sd["decoder_norm.bias"], 1e-6)
    pred = F.linear(x, sd["decoder_pred.weight"], sd["decoder_pred.bias"])

    # forward_loss (pred_t_dim = number of bands: the band selection is the identity)
    imgs5 = torch.unsqueeze(imgs, dim=1)
    bands = imgs5.shape[2]
    _imgs = torch.index_select(imgs5, 2, torch.linspace(0, bands - 1, bands).long())
    u, p = weight.shape[2], weight.shape[3]
    height, width = imgs.shape[-2:]
    h, w = height // p, width // p
    target1 = _imgs.reshape(n, 1, t, u, h, p, w, p)
    target1 = torch.einsum("nctuhpwq->nthwupqc", target1).reshape(n, t * h * w, u * p**2)
    target_spatial = target1.reshape(n, t, h * w, 192).sum(dim=1)
    pred_spatial = pred.reshape(n, t, h * w, 192).sum(dim=1)
    if norm_pix_loss:
        mean = target1.mean(dim=-1, keepdim=True)
        var = target1.var(dim=-1, keepdim=True)
        target1 = (target1 - mean) / (var + 1.0e-6) ** 0.5
    loss1 = ((pred - target1) ** 2).mean(dim=-1)
    loss1 = (loss1 * mask).sum() / mask.sum()
    loss3 = ((pred_spatial - target_spatial) ** 2).mean(dim=-1)
    loss3 = loss3.sum() / torch.ones([n, h * w]).sum()
    return {"latent": latent, "pred": pred, "mask": mask, "loss": loss1 + loss3}


def official_mae_state_dict(
    dim: int,
    depth: int,
    grid: int,
    groups: int,
    decoder_dim: int,
    decoder_depth: int,
    t_patch: int = 3,
    patch: int = 8,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Random float64 weights of a whole official MAE, under the official key names."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return 0.2 * torch.randn(*shape, generator=gen, dtype=torch.float64)

    sd = {
        "patch_embed.proj.weight": rand(dim, 1, t_patch, patch, patch),
        "patch_embed.proj.bias": rand(dim),
        "pos_embed_spatial": rand(1, grid * grid, dim),
        "pos_embed_temporal": rand(1, groups, dim),
        "norm.weight": 1 + rand(dim),
        "norm.bias": rand(dim),
        "mask_token": rand(1, 1, decoder_dim),
        "decoder_embed.weight": rand(decoder_dim, dim),
        "decoder_embed.bias": rand(decoder_dim),
        "decoder_pos_embed_spatial": rand(1, grid * grid, decoder_dim),
        "decoder_pos_embed_temporal": rand(1, groups, decoder_dim),
        "decoder_norm.weight": 1 + rand(decoder_dim),
        "decoder_norm.bias": rand(decoder_dim),
        "decoder_pred.weight": rand(t_patch * patch * patch, decoder_dim),
        "decoder_pred.bias": rand(t_patch * patch * patch),
    }
    for prefix, width, count in (
        ("blocks", dim, depth),
        ("decoder_blocks", decoder_dim, decoder_depth),
    ):
        shapes = {
            "norm": [(width,), (width,)],
            "square": [(width, width), (width,)],
            "up": [(4 * width, width), (4 * width,)],
            "down": [(width, 4 * width), (width,)],
        }
        for i in range(count):
            for part, kind in BLOCK_SHAPES.items():
                weight_shape, bias_shape = shapes[kind]
                sd[f"{prefix}.{i}.{part}.weight"] = rand(*weight_shape)
                sd[f"{prefix}.{i}.{part}.bias"] = rand(*bias_shape)
    return sd
