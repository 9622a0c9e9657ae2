"""Shared fixtures: where the real data lives (skipped without it, except under CI), and the CUDA
skip."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Real scenes shared by the team (never copied into the repository); override with HSI_SHARED_DATA.
SHARED_DATA = Path(os.environ.get("HSI_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
#: Set by .ci/run: missing real data fails the tests that need it instead of skipping them, so
#: nothing is silently skipped in CI.
REQUIRE_DATA = "HSI_REQUIRE_DATA"

pytest_plugins = ["pytester"]  # tests/test_shared_data.py runs this file in a child pytest


def pytest_configure(config):
    value = os.environ.get(REQUIRE_DATA, "")
    if value not in ("", "0", "1"):
        raise pytest.UsageError(f"{REQUIRE_DATA}={value!r}: use 1 (or 0, unset).")
    # The terratorch commands the tests start read it, after their import set "medium" (see
    # full_float32_matmuls below).
    os.environ.setdefault("terratorch_FLOAT_32_PRECISION", "highest")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder holding indian_pines/, jasper_ridge/ and samson/ (see its README).

    Without it, every test that uses this fixture skips (a plain source checkout), or fails when
    ``HSI_REQUIRE_DATA=1`` (CI).
    """
    if not (SHARED_DATA / "indian_pines" / "Indian_pines_corrected.mat").is_file():
        message = (
            f"real data not found under {SHARED_DATA}: set HSI_SHARED_DATA to the folder holding "
            "indian_pines/, jasper_ridge/ and samson/ (README.md)"
        )
        if os.environ.get(REQUIRE_DATA) == "1":
            pytest.fail(f"{message}; {REQUIRE_DATA}=1 makes this a failure")
        pytest.skip(message)
    return SHARED_DATA


@pytest.fixture(autouse=True)
def full_float32_matmuls():
    """Float32 matmuls at full precision in every test, whatever an import set.

    Importing TerraTorch sets ``torch.set_float32_matmul_precision("medium")`` (its Clay v1.5
    backbone module does, at import). On CPUs with AMX (Intel Sapphire Rapids and later) float32
    matmuls then run in bfloat16, and on recent NVIDIA GPUs in TF32: about three significant
    digits, which breaks the tests' 1e-5 comparisons against float64 and dense references.
    """
    torch = sys.modules.get("torch")  # a child pytest of tests/test_shared_data.py has none
    if torch is None:
        yield
        return
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(before)


def pytest_collection_modifyitems(config, items):
    cuda_items = [item for item in items if "cuda" in item.keywords]
    if not cuda_items:
        return
    import torch  # only here: a child pytest of tests/test_shared_data.py starts without it

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in cuda_items:
        item.add_marker(skip)
