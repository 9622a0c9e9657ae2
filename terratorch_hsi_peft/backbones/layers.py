"""Building blocks of the SpectralGPT encoder, with the official module and parameter names.

The names (``patch_embed.proj``, ``attn.q`` / ``attn.k`` / ``attn.v`` / ``attn.proj``,
``mlp.fc1`` / ``mlp.fc2``, ``norm1`` / ``norm2``) are those of the official code
(``util/video_vit.py`` of danfenghong/IEEE_TPAMI_SpectralGPT), so released checkpoints load key
for key and PEFT adapters can target ``attn.q`` and ``attn.v`` as plain ``nn.Linear`` layers.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

__all__ = ["Attention", "Block", "Mlp", "PatchEmbed3D", "layer_norm"]

#: LayerNorm as in the official encoder (eps 1e-6, not PyTorch's default 1e-5).
layer_norm = partial(nn.LayerNorm, eps=1e-6)


class PatchEmbed3D(nn.Module):
    """Cut a (B, 1, bands, H, W) cube into spectral-spatial tubelets and embed each one.

    Returns tokens (B, groups * h * w, embed_dim) ordered spectral-group-major, ``(t h w)``, as the
    official encoder orders them.
    """

    def __init__(self, patch_size: int, t_patch_size: int, embed_dim: int) -> None:
        super().__init__()
        kernel = (t_patch_size, patch_size, patch_size)
        self.proj = nn.Conv3d(1, embed_dim, kernel_size=kernel, stride=kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed tubelets: (B, 1, bands, H, W) -> (B, t * h * w, embed_dim)."""
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with separate q, k, v projections (official layout).

    The attention itself runs through ``F.scaled_dot_product_attention``, which computes the same
    ``softmax(q k^T / sqrt(d)) v`` as the official code with fused kernels where available. On the
    CPU it is pinned to PyTorch's "math" kernel: for SpectralGPT's short token sequences the CPU
    flash kernel was measured slower (2.3x per training step with 64 tokens of head width 32,
    about 10% with ViT-B's 64-wide heads); GPUs keep PyTorch's own choice.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.k = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, N, C)."""
        batch, tokens, channels = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(batch, tokens, self.num_heads, -1).transpose(1, 2)

        q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
        if x.device.type == "cpu":
            with sdpa_kernel(SDPBackend.MATH):
                out = F.scaled_dot_product_attention(q, k, v)
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, channels))


class Mlp(nn.Module):
    """Two-layer GELU MLP with the official names ``fc1`` and ``fc2``."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, N, C)."""
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0
    ) -> None:
        super().__init__()
        self.norm1 = layer_norm(dim)
        self.attn = Attention(dim, num_heads)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = layer_norm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, N, C)."""
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))
