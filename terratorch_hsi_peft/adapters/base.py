"""Shared machinery of the adapted Linear layers: forward, merge/unmerge, dtypes, base digest."""

from __future__ import annotations

import functools
import hashlib
import math
from abc import ABC, abstractmethod

import torch
from torch import nn

from terratorch_hsi_peft.adapters.config import AdapterConfig
from terratorch_hsi_peft.utils.finite import non_finite

__all__ = ["SKETCH_SIZE", "AdapterLinear", "linear_digest", "linear_sketch"]

#: The sketch of a Linear's weights holds SKETCH_SIZE**2 projections (plus the norm).
SKETCH_SIZE = 4


def linear_digest(layer: nn.Linear) -> str:
    """sha256 over a Linear's weight and bias shapes and float32 CPU bytes."""
    digest = hashlib.sha256()
    for tensor in (layer.weight, layer.bias):
        if tensor is None:
            digest.update(b"no bias")
            continue
        data = tensor.detach().to(device="cpu", dtype=torch.float32).contiguous()
        digest.update(repr(tuple(data.shape)).encode())
        digest.update(data.numpy().tobytes())
    return digest.hexdigest()


def linear_sketch(layer: nn.Linear) -> list[float]:
    """``[norm, s_11, ..., s_kk]``: the Frobenius norm of ``[weight | bias]`` and its bilinear
    projections ``s_ij = u_i^T [weight | bias] v_j`` on fixed +-1 vectors (``k = SKETCH_SIZE``).

    Unlike a digest of the bytes, it compares with a tolerance: ``mean((s - s')**2)`` estimates
    ``||W - W'||**2`` (``E[(u^T D v)**2] = ||D||**2`` for +-1 vectors), so a float16/bfloat16 copy
    of the weights (relative distance about 0.002) stays close to the original while other
    weights (distance about 1) do not. Computed on the CPU: device-independent.
    """
    weight = layer.weight.detach().to(device="cpu", dtype=torch.float32)
    rows, cols = weight.shape[0], weight.shape[1] + (layer.bias is not None)
    u = torch.stack([_signs(rows, f"u{i}") for i in range(SKETCH_SIZE)])
    v = torch.stack([_signs(cols, f"v{j}") for j in range(SKETCH_SIZE)], dim=1)
    projections = u @ weight @ v[: weight.shape[1]]  # float32 sums: rounding far below 1e-4
    squares = weight.pow(2).sum(dtype=torch.float64)
    if layer.bias is not None:  # the bias is the last column of [weight | bias]
        bias = layer.bias.detach().to(device="cpu", dtype=torch.float32)
        projections += (u @ bias)[:, None] * v[-1]
        squares += bias.pow(2).sum(dtype=torch.float64)
    values = [float(squares.sqrt()), *projections.flatten().tolist()]
    # 8 significant digits: far below any tolerance, and a short JSON record per layer.
    return [float(f"{x:.8g}") for x in values]


@functools.lru_cache(maxsize=64)
def _signs(n: int, label: str) -> torch.Tensor:
    """``n`` fixed +-1 values, from sha256 in counter mode: the same in every version of every
    library (torch's random generators do not promise that)."""
    stream = b"".join(
        hashlib.sha256(f"terratorch_hsi_peft sketch {label} {n} {block}".encode()).digest()
        for block in range((n + 255) // 256)
    )
    bits = torch.tensor(list(stream), dtype=torch.uint8)
    bits = ((bits[:, None] >> torch.arange(8, dtype=torch.uint8)) & 1).flatten()[:n]
    return bits.to(torch.float32) * 2 - 1


class AdapterLinear(nn.Module, ABC):
    """An ``nn.Linear`` plus a trainable update: ``y = base(x) + scaling * dW dropout(x)``.

    Subclasses create their factors with :meth:`new_factor` and define the efficient
    :meth:`adapter_forward` (``dW x``, unscaled) and the dense :meth:`delta_weight` (merging only).

    Adapter factors are float32 when the base weight is half precision (float16/bfloat16) and
    otherwise in the base weight's dtype. Under autocast the adapter path runs in the autocast
    dtype; without autocast the input is cast to the factors' dtype and the result back.

    Attributes:
        base_layer: the wrapped Linear (its parameters stay frozen by :func:`apply_peft`).
        config: the shared adapter configuration.
        scaling: the factor ``s`` of ``s * dW``.
        merged: whether ``s * dW`` is folded into ``base_layer.weight`` (forward then skips the
            adapter path, so adapters get no gradient while merged).
        layer_name: the layer's qualified name in the adapted model (used in messages).
    """

    def __init__(
        self, base_layer: nn.Linear, config: AdapterConfig, scaling: float, name: str
    ) -> None:
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(
                f"{name}: {config.method.name} adapts nn.Linear layers only, got "
                f"{type(base_layer).__name__}; target the Linear layers inside it."
            )
        self.base_layer = base_layer
        self.config = config
        self.scaling = float(scaling)
        self.in_features = base_layer.in_features
        self.out_features = base_layer.out_features
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.merged = False
        self.layer_name = name
        # Digest of the base weights taken before the first merge: unmerging restores them only
        # up to rounding. Loading other base weights (load_state_dict) forgets it.
        self._base_digest: str | None = None
        self._base_sketch: list[float] | None = None
        self.register_load_state_dict_pre_hook(_forget_base_digest)

    def check_rank(self, name: str, label: str, r: int, fix: str = "") -> None:
        """Refuse a rank ``r`` above the weight's own (``min(in, out)``), naming the layer."""
        max_rank = min(self.in_features, self.out_features)
        if r > max_rank:
            raise ValueError(
                f"{name}: {label} rank r={r} exceeds the rank of its {self.out_features}x"
                f"{self.in_features} weight; r must be <= min(in_features, out_features) = "
                f"{max_rank}.{fix.format(max_rank=max_rank)}"
            )

    def new_factor(self, rows: int, cols: int) -> nn.Parameter:
        """An uninitialised factor on the base weight's device, in the adapter dtype."""
        weight = self.base_layer.weight
        dtype = weight.dtype if torch.finfo(weight.dtype).bits >= 32 else torch.float32
        return nn.Parameter(torch.empty(rows, cols, dtype=dtype, device=weight.device))

    @staticmethod
    def init_random(factor: torch.Tensor) -> None:
        """Kaiming-uniform, as Hugging Face peft initialises LoRA's ``A``."""
        nn.init.kaiming_uniform_(factor, a=math.sqrt(5))

    @abstractmethod
    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ dW.T`` (unscaled) without forming the dense ``dW``."""

    @abstractmethod
    def delta_weight(self) -> torch.Tensor:
        """The dense unscaled update ``dW`` (``out_features x in_features``), for merging."""

    def adapter_parameters(self) -> dict[str, nn.Parameter]:
        """The trainable adapter tensors, by name relative to this layer (no base weights)."""
        return {
            name: p for name, p in self.named_parameters() if not name.startswith("base_layer.")
        }

    @property
    def adapter_dtype(self) -> torch.dtype:
        """The dtype of the adapter factors."""
        # Every layer keeps at least one factor unparametrized, directly in ``_parameters``.
        return next(iter(self._parameters.values())).dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        if self.merged:
            return y
        h = self.dropout(x)
        if not torch.is_autocast_enabled(h.device.type):
            h = h.to(self.adapter_dtype)
        return y + (self.adapter_forward(h) * self.scaling).to(y.dtype)

    def base_digest(self) -> str:
        """sha256 of the frozen base weight and bias as float32 CPU bytes (device- and
        dtype-independent), identifying the weights the adapter is trained on.

        For a merged layer, and one unmerged again (whose weight is restored only up to
        rounding), it is the digest of the base weights before the first merge.
        """
        if self._base_digest is not None:
            return self._base_digest
        return linear_digest(self.base_layer)

    def base_sketch(self) -> list[float]:
        """:func:`linear_sketch` of the frozen base weights, compared with a tolerance (so in
        any precision); like :meth:`base_digest`, taken before the first merge."""
        if self._base_sketch is not None:
            return self._base_sketch
        return linear_sketch(self.base_layer)

    def non_finite_tensors(self) -> list[str]:
        """Names of the adapter tensors (as stored) holding NaN or Inf."""
        return non_finite(self.adapter_parameters())

    @torch.no_grad()
    def merge(self) -> None:
        """Fold ``scaling * dW`` into the base weight (in at least float32). No-op if merged.

        Raises:
            ValueError: an adapter tensor holds NaN/Inf, or the merged weight would overflow;
                the base weight is left unchanged.
        """
        if self.merged:
            return
        bad = self.non_finite_tensors()
        if bad:
            raise ValueError(
                f"{self.layer_name}: adapter tensor(s) {bad} hold NaN or Inf; merging would "
                "spoil the base weight. Load adapters from a run that did not diverge (lower the "
                "learning rate, or train in float32)."
            )
        digest, sketch = self.base_digest(), self.base_sketch()
        self._add_to_weight(self.scaling)
        self._base_digest, self._base_sketch = digest, sketch
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract ``scaling * dW`` from the base weight again. No-op if not merged."""
        if self.merged:
            self._add_to_weight(-self.scaling)
            self.merged = False

    def _add_to_weight(self, factor: float) -> None:
        weight = self.base_layer.weight
        work = torch.promote_types(weight.dtype, torch.float32)
        updated = (weight.to(work) + factor * self.delta_weight().to(work)).to(weight.dtype)
        if not torch.isfinite(updated).all():
            raise ValueError(
                f"{self.layer_name}: the weight with the adapter update folded in holds NaN or "
                f"Inf (overflow in {weight.dtype}); it was left unchanged. Keep the adapters "
                "unmerged or use a wider dtype."
            )
        weight.copy_(updated)

    def extra_repr(self) -> str:
        return f"method={self.config.method.name}, scaling={self.scaling:g}, merged={self.merged}"


def _forget_base_digest(layer: AdapterLinear, state_dict: dict, prefix: str, *_) -> None:
    if not layer.merged and f"{prefix}base_layer.weight" in state_dict:
        layer._base_digest = layer._base_sketch = None
