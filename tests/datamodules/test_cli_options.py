"""Every datamodule option reaches the real ``terratorch`` command, shared ones included.

The datamodules declare only their own arguments and pass the shared ones to
``HyperspectralDataModule`` with ``**kwargs``; jsonargparse follows that call to the base class's
signature. These tests run ``terratorch fit --data.help <class>`` and ``--print_config`` and
check that each option of the class and of its base appears with its type and default.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import pytest
import yaml
from terratorch_cli import terratorch

from terratorch_hsi_peft.datamodules import (
    HyperspectralDataModule,
    HyperspectralPatchDataModule,
    HyperspectralSceneDataModule,
)

CLASSES = [HyperspectralPatchDataModule, HyperspectralSceneDataModule]


def expected_options(cls: type) -> dict[str, Any]:
    """Option -> default, read from each ``__init__`` up to the base (a subclass's wins)."""
    options: dict[str, Any] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or not issubclass(klass, HyperspectralDataModule):
            continue
        for p in inspect.signature(vars(klass)["__init__"]).parameters.values():
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                options.setdefault(p.name, p.default)
    return options


def test_shared_options_are_declared_in_the_base_only():
    shared = set(expected_options(HyperspectralDataModule))
    for cls in CLASSES:
        own = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
        # batch_size is the one the scene datamodule overrides (tiles, not windows).
        assert own & shared <= {"batch_size"}, cls.__name__
        assert shared < set(expected_options(cls)), cls.__name__


@pytest.mark.slow  # runs the terratorch command (about 15-30 s)
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_help_lists_every_option_with_type_and_default(cls):
    path = f"{cls.__module__.rsplit('.', 1)[0]}.{cls.__name__}"
    output = terratorch(["fit", "--data.help", path])
    # One block per option: "  --data.<name> ..." up to the next option.
    blocks = re.split(r"\n  (?=--data\.)", output)
    described = {}
    for block in blocks:
        name = re.match(r"--data\.(\w+)", block)
        found = re.search(
            r"\(type: (.+), default: (.+?)(?:, known subclasses: [^)]*)?\)\s*$",
            " ".join(block.split()),
        )
        if name and found:
            described[name.group(1)] = found.groups()
    expected = expected_options(cls)
    assert set(described) >= set(expected), sorted(set(expected) - set(described))
    for option, default in expected.items():
        type_text, default_text = described[option]
        assert type_text, option
        assert yaml.safe_load(default_text) == default, option


@pytest.mark.slow
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_print_config_lists_every_option_with_its_default(cls):
    path = f"{cls.__module__.rsplit('.', 1)[0]}.{cls.__name__}"
    output = terratorch(["fit", "--data.class_path", path, "--print_config"])
    data = yaml.safe_load(output[output.index("\ndata:\n") :])["data"]
    assert data["class_path"] == path
    assert data["init_args"] == expected_options(cls)
