"""Independent references for the SpectralGPT tests.

- ``official_forward``: the official encoder forward written out with functional ops, following
  ``models_mae_spectral.py`` / ``util/video_vit.py`` of danfenghong/IEEE_TPAMI_SpectralGPT
  (einsum ``ncts->ntsc``, ``repeat`` + ``repeat_interleave`` position tables, explicit softmax
  attention), reading weights by their official names.
- ``bicubic_matrix`` / ``spectral_interp``: float64 NumPy resampling with PyTorch's conventions
  (Keys cubic kernel a=-0.75, half-pixel centres, replicated border; linear interpolation of
  cell centres), to check the position-table resizing.
- ``official_state_dict``: a checkpoint's ``model`` entry in the official layout, encoder and
  MAE decoder keys, built by name.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

BLOCK_PARTS = {
    "norm1": "norm",
    "attn.q": "square",
    "attn.k": "square",
    "attn.v": "square",
    "attn.proj": "square",
    "norm2": "norm",
    "mlp.fc1": "up",
    "mlp.fc2": "down",
}


def official_forward(
    sd: dict[str, torch.Tensor], x: torch.Tensor, depth: int, num_heads: int
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Tokens after each block and after the final norm, for x (B, bands, H, W)."""
    x = torch.unsqueeze(x, dim=1)
    weight = sd["patch_embed.proj.weight"]
    x = F.conv3d(x, weight, sd["patch_embed.proj.bias"], stride=tuple(weight.shape[2:]))
    x = torch.einsum("ncts->ntsc", x.flatten(3))
    n, t, spatial, c = x.shape
    x = x.reshape(n, t * spatial, c)
    pos = sd["pos_embed_spatial"].repeat(1, t, 1) + torch.repeat_interleave(
        sd["pos_embed_temporal"], spatial, dim=1
    )
    x = x + pos
    outs = []
    for i in range(depth):
        p = f"blocks.{i}."

        def lin(name, h, p=p):
            return F.linear(h, sd[p + name + ".weight"], sd[p + name + ".bias"])

        def ln(name, h, p=p):
            return F.layer_norm(h, (c,), sd[p + name + ".weight"], sd[p + name + ".bias"], 1e-6)

        h = ln("norm1", x)
        q, k, v = (
            lin(name, h).reshape(n, -1, num_heads, c // num_heads).permute(0, 2, 1, 3)
            for name in ("attn.q", "attn.k", "attn.v")
        )
        attn = ((q @ k.transpose(-2, -1)) * (c // num_heads) ** -0.5).softmax(dim=-1)
        x = x + lin("attn.proj", (attn @ v).transpose(1, 2).reshape(n, -1, c))
        x = x + lin("mlp.fc2", F.gelu(lin("mlp.fc1", ln("norm2", x))))
        outs.append(x)
    final = F.layer_norm(x, (c,), sd["norm.weight"], sd["norm.bias"], 1e-6)
    return outs, final


def _cubic(d: float, a: float = -0.75) -> float:
    d = abs(d)
    if d <= 1:
        return (a + 2) * d**3 - (a + 3) * d**2 + 1
    if d < 2:
        return a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a
    return 0.0


def bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix of 1-D bicubic resampling, PyTorch ``align_corners=False``."""
    matrix = np.zeros((n_out, n_in))
    for j in range(n_out):
        src = (j + 0.5) * n_in / n_out - 0.5
        base = math.floor(src)
        frac = src - base
        for k in range(-1, 3):
            matrix[j, min(max(base + k, 0), n_in - 1)] += _cubic(k - frac)
    return matrix


def bicubic_table(table: torch.Tensor, old: int, new: tuple[int, int]) -> torch.Tensor:
    """Resize a (1, old*old, D) spatial table to (1, new_h*new_w, D) with NumPy."""
    grid = table[0].double().numpy().reshape(old, old, -1)
    rows, cols = bicubic_matrix(old, new[0]), bicubic_matrix(old, new[1])
    out = np.einsum("ih,hwd,jw->ijd", rows, grid, cols)
    return torch.from_numpy(out.reshape(1, new[0] * new[1], -1))


def spectral_interp(table: torch.Tensor, n_new: int) -> torch.Tensor:
    """Resize a (1, T, D) spectral table to (1, n_new, D): linear through cell centres."""
    values = table[0].double().numpy()
    n_old = values.shape[0]
    centres = (np.arange(n_new) + 0.5) * n_old / n_new - 0.5
    out = np.stack(
        [np.interp(centres, np.arange(n_old), values[:, d]) for d in range(values.shape[1])], 1
    )
    return torch.from_numpy(out[None])


def official_state_dict(
    dim: int, depth: int, grid: int, groups: int, decoder_dim: int = 16, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Random weights under the official key names, with the MAE decoder's keys."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=gen)

    shapes = {
        "norm": [(dim,), (dim,)],
        "square": [(dim, dim), (dim,)],
        "up": [(4 * dim, dim), (4 * dim,)],
        "down": [(dim, 4 * dim), (dim,)],
    }
    sd = {
        "patch_embed.proj.weight": rand(dim, 1, 3, 8, 8),
        "patch_embed.proj.bias": rand(dim),
        "pos_embed_spatial": rand(1, grid * grid, dim),
        "pos_embed_temporal": rand(1, groups, dim),
        "norm.weight": rand(dim),
        "norm.bias": rand(dim),
    }
    for i in range(depth):
        for part, kind in BLOCK_PARTS.items():
            weight_shape, bias_shape = shapes[kind]
            sd[f"blocks.{i}.{part}.weight"] = rand(*weight_shape)
            sd[f"blocks.{i}.{part}.bias"] = rand(*bias_shape)
    sd.update(
        {
            "mask_token": rand(1, 1, decoder_dim),
            "decoder_embed.weight": rand(decoder_dim, dim),
            "decoder_embed.bias": rand(decoder_dim),
            "decoder_pos_embed_spatial": rand(1, grid * grid, decoder_dim),
            "decoder_pos_embed_temporal": rand(1, groups, decoder_dim),
            "decoder_blocks.0.attn.q.weight": rand(decoder_dim, decoder_dim),
            "decoder_norm.weight": rand(decoder_dim),
            "decoder_pred.weight": rand(3 * 8 * 8, decoder_dim),
            "decoder_pred.bias": rand(3 * 8 * 8),
        }
    )
    return sd
