"""Fixtures for the product tests: the fake-product writer (tests/data/make_fake_products.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_FAKES = Path(__file__).resolve().parents[1] / "data" / "make_fake_products.py"


@pytest.fixture(scope="session")
def fake_products():
    """The fake-product writer module; its ``make_*`` functions write into a given folder."""
    spec = importlib.util.spec_from_file_location("make_fake_products", _FAKES)
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the module runs.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
