"""Shared fixtures: where the real data lives, and the CUDA skip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Real scenes shared by the team (never copied into the repository); override with HSI_SHARED_DATA.
SHARED_DATA = Path(os.environ.get("HSI_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder holding indian_pines/, jasper_ridge/ and samson/ (see its README)."""
    if not (SHARED_DATA / "indian_pines" / "Indian_pines_corrected.mat").is_file():
        pytest.fail(f"Real data not found under {SHARED_DATA}; set HSI_SHARED_DATA to its folder.")
    return SHARED_DATA


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
