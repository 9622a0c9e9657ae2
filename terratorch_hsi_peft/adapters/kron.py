"""Kronecker-factor shapes and the product ``x @ kron(A, B).T`` without building ``kron(A, B)``."""

from __future__ import annotations

import math

import torch

__all__ = ["divisor_pairs", "kron_linear", "near_sqrt_factors", "resolve_kron_shapes"]

Shape = tuple[int, int]


def divisor_pairs(n: int) -> list[Shape]:
    """All ``(m, n // m)`` with ``m`` dividing ``n``, smallest ``m`` first."""
    return [(m, n // m) for m in range(1, n + 1) if n % m == 0]


def near_sqrt_factors(n: int) -> Shape:
    """``(m, n // m)`` with ``m`` the largest divisor not above sqrt(n): 768 -> (24, 32).

    The same split as LyCORIS / Hugging Face peft ``factorization(n)``.
    """
    m = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    return m, n // m


def resolve_kron_shapes(
    d_out: int,
    d_in: int,
    a_shape: Shape | None,
    b_shape: Shape | None,
    layer_name: str = "layer",
) -> tuple[Shape, Shape]:
    """Shapes ``(a1, a2), (b1, b2)`` of ``A kron B`` for a ``d_out x d_in`` weight.

    Either shape may be left out (derived from the other); both left out gives factors near
    sqrt(d), the smaller one first (768x768 -> A 24x24, B 32x32).

    Raises:
        ValueError: ``a1 * b1 != d_out`` or ``a2 * b2 != d_in``; the message lists valid choices.
    """
    if a_shape is None and b_shape is None:
        (a1, b1), (a2, b2) = near_sqrt_factors(d_out), near_sqrt_factors(d_in)
        return (a1, a2), (b1, b2)
    if a_shape is not None:
        a1, a2 = a_shape
        ok = d_out % a1 == 0 and d_in % a2 == 0
        derived = (d_out // a1, d_in // a2) if ok else None
        if ok and (b_shape is None or tuple(b_shape) == derived):
            return (a1, a2), derived
    else:
        b1, b2 = b_shape
        if d_out % b1 == 0 and d_in % b2 == 0:
            return (d_out // b1, d_in // b2), (b1, b2)
    raise ValueError(
        f"{layer_name}: a_shape={_fmt(a_shape)} and b_shape={_fmt(b_shape)} do not factor its "
        f"{d_out}x{d_in} weight; A kron B needs a1*b1 = {d_out} and a2*b2 = {d_in}. Valid "
        f"(a1, b1): {divisor_pairs(d_out)}; valid (a2, b2): {divisor_pairs(d_in)}. Give one "
        "shape built from these pairs, or leave both out to pick factors near sqrt(d)."
    )


def kron_linear(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Return ``x @ kron(a, b).T`` for ``x`` of shape ``(..., a2 * b2)`` in O(N d sqrt(d)).

    With ``X = x.reshape(N, a2, b2)`` the product is ``a @ X @ b.T``, shape ``(N, a1, b1)``,
    flattened to ``a1 * b1`` outputs; the dense ``kron(a, b)`` is never formed.
    """
    a1, a2 = a.shape
    b1, b2 = b.shape
    x3 = x.reshape(-1, a2, b2)
    y = torch.matmul(a, torch.matmul(x3, b.transpose(0, 1)))
    return y.reshape(*x.shape[:-1], a1 * b1)


def _fmt(shape: Shape | None) -> str:
    return "auto" if shape is None else f"[{shape[0]}, {shape[1]}]"
