"""Split fused qkv Linears into separate q/k/v Linears so adapters can target them.

Equivalent to TerraTorch's ``replace_qkv`` / ``QKVSep`` (``terratorch.models.peft_utils``), with the
same submodule names (``<qkv>.q_linear``, ``.k_linear``, ``.v_linear``), reimplemented so the
adapter code does not depend on TerraTorch's internals and works on any model. Unlike TerraTorch,
a name that matches nothing is an error.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["QKVSplit", "split_qkv"]


class QKVSplit(nn.Module):
    """Three Linears whose concatenated outputs equal those of the fused ``qkv`` Linear."""

    def __init__(self, qkv: nn.Linear) -> None:
        super().__init__()
        if qkv.out_features % 3:
            raise ValueError(
                f"A fused qkv Linear needs out_features divisible by 3, got {qkv.out_features}; "
                "check that replace_qkv names the attention's qkv projection."
            )
        self.in_features = qkv.in_features
        self.out_features = qkv.out_features
        width = qkv.out_features // 3
        has_bias = qkv.bias is not None
        kwargs = {"device": qkv.weight.device, "dtype": qkv.weight.dtype}
        self.q_linear = nn.Linear(qkv.in_features, width, bias=has_bias, **kwargs)
        self.k_linear = nn.Linear(qkv.in_features, width, bias=has_bias, **kwargs)
        self.v_linear = nn.Linear(qkv.in_features, width, bias=has_bias, **kwargs)
        with torch.no_grad():
            for i, linear in enumerate((self.q_linear, self.k_linear, self.v_linear)):
                linear.weight.copy_(qkv.weight[i * width : (i + 1) * width])
                if has_bias:
                    linear.bias.copy_(qkv.bias[i * width : (i + 1) * width])
                linear.weight.requires_grad_(qkv.weight.requires_grad)
                if has_bias:
                    linear.bias.requires_grad_(qkv.bias.requires_grad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.q_linear(x), self.k_linear(x), self.v_linear(x)), dim=-1)


def split_qkv(model: nn.Module, qkv_name: str) -> list[str]:
    """Replace every Linear named ``qkv_name`` (or ending in ``"." + qkv_name``) by a QKVSplit.

    Returns:
        The qualified names of the replaced modules.

    Raises:
        ValueError: no module has that name.
        TypeError: a module with that name is not an ``nn.Linear``.
    """
    names = [
        name
        for name, _ in model.named_modules()
        if name == qkv_name or name.endswith(f".{qkv_name}")
    ]
    if not names:
        raise ValueError(
            f"replace_qkv={qkv_name!r} matches no module; name the fused qkv Linear (e.g. 'qkv') "
            "or set replace_qkv to None if attention already has separate q/k/v layers."
        )
    splits = {}
    for name in names:
        fused = model.get_submodule(name)
        if not isinstance(fused, nn.Linear):
            raise TypeError(
                f"replace_qkv={qkv_name!r} matched {name}, a {type(fused).__name__}; only a fused "
                "qkv nn.Linear can be split."
            )
        splits[name] = QKVSplit(fused)
    for name, split in splits.items():  # all checked first: an error leaves the model unchanged
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, split)
    return names
