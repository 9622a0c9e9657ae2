"""docs/configuration.md documents exactly the options the code takes, with the code's defaults.

Each table of the page follows a ``<!-- options: <what> -->`` marker; its first column holds the
option names, its second the defaults as YAML. They are compared with the signatures (datamodules,
callbacks) and the backbone factories' defaults. The adapter methods' table is generated from the
method registry (``tests/adapters/test_registry.py`` keeps it current).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
from typing import Any

import pytest
import yaml
from config_helpers import REPO_ROOT

from terratorch_hsi_peft.adapters.config import PEFT_CONFIG_KEYS
from terratorch_hsi_peft.backbones import spectralgpt_vit_base
from terratorch_hsi_peft.models.spectral_path_spec import SPECTRAL_PATH_KEYS, SpectralPathSpec

PAGE = REPO_ROOT / "docs" / "configuration.md"
ARCHITECTURE_KEYS = ("embed_dim", "depth", "num_heads")


def tables() -> dict[str, list[list[str]]]:
    """Rows (cells without backticks) of every marked table, by marker."""
    found: dict[str, list[list[str]]] = {}
    lines = PAGE.read_text().splitlines()
    for i, line in enumerate(lines):
        marker = re.fullmatch(r"<!-- options: (\S+) -->", line.strip())
        if not marker:
            continue
        rows = []
        for row in lines[i + 3 :]:  # after the header and the separator
            if not row.startswith("|"):
                break
            rows.append([cell.strip().strip("`") for cell in row.strip("|").split("|")])
        found[marker.group(1)] = rows
    return found


def _default(cell: str) -> Any:
    return yaml.safe_load(cell)


def _code_default(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


#: The datamodules' base class has the table of their shared options; each datamodule's table
#: holds its own (tests/datamodules/test_cli_options.py checks the command lists both).
CLASSES = [
    "terratorch_hsi_peft.datamodules.HyperspectralDataModule",
    "terratorch_hsi_peft.datamodules.HyperspectralPatchDataModule",
    "terratorch_hsi_peft.datamodules.HyperspectralSceneDataModule",
    "terratorch_hsi_peft.datamodules.HyperspectralPretrainDataModule",
    "terratorch_hsi_peft.datamodules.ProductMapDataModule",
    "terratorch_hsi_peft.callbacks.HyperspectralMetrics",
    "terratorch_hsi_peft.callbacks.BalancedClassWeights",
    "terratorch_hsi_peft.callbacks.ClassMapWriter",
    "terratorch_hsi_peft.callbacks.GeoTiffMapWriter",
    "terratorch_hsi_peft.callbacks.AdapterCheckpoint",
    "terratorch_hsi_peft.callbacks.EncoderExport",
    "terratorch_hsi_peft.callbacks.MergeAdaptersForPredict",
    "terratorch_hsi_peft.callbacks.LoadPlugin",
]


def test_every_public_callback_and_datamodule_has_a_table():
    from terratorch_hsi_peft import callbacks, datamodules

    public = [f"{callbacks.__name__}.{name}" for name in callbacks.__all__]
    public += [
        f"{datamodules.__name__}.{name}"
        for name in datamodules.__all__
        if name.endswith("DataModule")
    ]
    assert sorted(public) == sorted(CLASSES)
    assert set(CLASSES) <= set(tables())


@pytest.mark.parametrize("path", CLASSES)
def test_class_options_and_defaults(path):
    module, name = path.rsplit(".", 1)
    parameters = {
        p.name: p.default
        for p in inspect.signature(
            getattr(importlib.import_module(module), name)
        ).parameters.values()
        if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    rows = tables()[path]
    assert [row[0] for row in rows] == list(parameters)
    for option, default, *_ in rows:
        if parameters[option] is inspect.Parameter.empty:
            assert default == "required", option
            continue
        assert _default(default) == _code_default(parameters[option]), option


def test_backbone_options_and_defaults():
    """In the signature's order; the widths differ by size, so the page says "architecture"."""
    rows = {row[0].removeprefix("backbone_"): row[1] for row in tables()["backbone"]}
    parameters = inspect.signature(spectralgpt_vit_base).parameters
    assert list(rows) == list(parameters)
    for option, parameter in parameters.items():
        if option in ARCHITECTURE_KEYS:
            assert rows[option] == "architecture", option
        else:
            assert _default(rows[option]) == _code_default(parameter.default), option


def test_peft_config_keys():
    assert [row[0] for row in tables()["peft_config"]] == list(PEFT_CONFIG_KEYS)


def test_spectral_path_keys_and_defaults():
    rows = tables()["spectral_path"]
    fields = dataclasses.fields(SpectralPathSpec)
    assert [row[0] for row in rows] == [f.name for f in fields] == list(SPECTRAL_PATH_KEYS)
    for (option, default, *_), field in zip(rows, fields, strict=True):
        if field.default is dataclasses.MISSING:
            assert default == "required", option
        else:
            assert _default(default) == field.default, option
