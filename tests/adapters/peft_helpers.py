"""Small models and helpers for the adapter tests (imported by name: a module called
``conftest`` is ambiguous when pytest collects several test folders in one run)."""

from __future__ import annotations

import torch
from torch import nn

from terratorch_hsi_peft.adapters import adapter_layers, get_method, method_names

#: Every registered method: a new method module is tested without editing the tests.
ALL_METHODS = method_names()


class ToyAttention(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.q, self.k, self.v, self.proj = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q(x), self.k(x), self.v(x)
        attn = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
        return self.proj(attn @ v)


class ToyBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = ToyAttention(dim)
        self.mlp = nn.Sequential()
        self.mlp.fc1 = nn.Linear(dim, 2 * dim)
        self.mlp.act = nn.GELU()
        self.mlp.fc2 = nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm(x))
        return x + self.mlp(x)


class ToyViT(nn.Module):
    """Blocks named like SpectralGPT's: ``blocks.N.attn.q|k|v|proj``, ``blocks.N.mlp.fc1|fc2``."""

    def __init__(self, dim: int = 48, depth: int = 2) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(ToyBlock(dim) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def peft_config(method: str, targets=("attn.q", "attn.v"), **kwargs) -> dict:
    if "r" in get_method(method).options.option_names():  # a small rank fits the toy layers
        kwargs.setdefault("r", 4)
    return {
        "method": method,
        "replace_qkv": None,
        "peft_config_kwargs": {"target_modules": list(targets), **kwargs},
    }


def randomise_adapters(model: nn.Module, seed: int = 0) -> None:
    """Give every stored adapter tensor random non-zero values (no factor left at zero)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in adapter_layers(model).values():
            for p in layer.adapter_parameters().values():
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.1)
