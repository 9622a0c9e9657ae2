"""Refusing weights that hold NaN or Inf, wherever the plugin writes or loads them.

A diverged run (or a loss that is NaN from the first step) leaves weights full of NaN that load
and run without an error and turn every output into NaN. The plugin's adapter files, encoder
exports and checkpoint loaders all refuse them through :func:`check_finite`, with one message.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

__all__ = ["check_finite", "listed", "non_finite"]


def non_finite(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors of ``tensors`` that hold NaN or Inf, in their order."""
    return [
        name
        for name, tensor in tensors.items()
        if tensor.is_floating_point() and not bool(tensor.isfinite().all())
    ]


def listed(names: list[str], shown: int = 5) -> str:
    """``a, b, c`` or, for more than ``shown`` names, the first ones and ``... (N in all)``."""
    return ", ".join(names[:shown]) + (f", ... ({len(names)} in all)" if len(names) > shown else "")


def check_finite(
    tensors: Mapping[str, torch.Tensor],
    source: str,
    consequence: str,
    error: type[ValueError] = ValueError,
) -> None:
    """Refuse ``tensors`` if a floating-point one holds NaN or Inf.

    Args:
        tensors: the weights by name.
        source: the file (or what is being written or loaded), first in the message.
        consequence: what happened and the fix, after the named tensors (e.g. "the run that
            wrote it diverged. It was not loaded; ...").
        error: the exception type raised (a ValueError subclass, such as ``CheckpointError``).

    Raises:
        ValueError: ``"<source> holds NaN or Inf in <tensors>: <consequence>"``.
    """
    bad = non_finite(tensors)
    if bad:
        raise error(f"{source} holds NaN or Inf in {listed(bad)}: {consequence}")
