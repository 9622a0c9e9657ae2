"""Fixtures of the adapter tests; the helpers live in ``peft_helpers``."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from peft_helpers import ToyViT


@pytest.fixture
def toy_vit() -> Callable[..., ToyViT]:
    def build(seed: int = 0, **kwargs) -> ToyViT:
        torch.manual_seed(seed)
        return ToyViT(**kwargs)

    return build
