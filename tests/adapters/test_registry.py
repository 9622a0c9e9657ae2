"""The method registry: one declaration per method feeds validation, routing, docs and tests."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from peft_helpers import peft_config
from torch import nn

from terratorch_hsi_peft.adapters import registry
from terratorch_hsi_peft.adapters.config import AdapterConfig, PeftSpec
from terratorch_hsi_peft.adapters.methods.lora import LoRALinear, LoRAOptions
from terratorch_hsi_peft.adapters.registry import (
    AdapterMethod,
    MethodOptions,
    get_method,
    method_names,
    methods_markdown,
    option,
    positive_int,
    register_method,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def section(path: Path, name: str) -> str:
    text = path.read_text()
    start, end = f"<!-- {name}:start -->\n", f"\n<!-- {name}:end -->"
    assert start in text and end in text, f"{path} has no {name} section"
    return text.split(start, 1)[1].split(end, 1)[0]


def test_docs_method_tables_are_the_registry():
    page = REPO_ROOT / "docs" / "configuration.md"
    heading, body = section(page, "methods").split("\n\n", 1)
    assert heading.startswith("### ")
    assert body == methods_markdown(), (
        "docs/configuration.md is stale: python -m benchmarks.docgen.methods"
    )
    for name in method_names():
        assert f"| `{name}` |" in body


def test_the_package_description_names_every_method():
    # pyproject.toml's description (the wheel's summary) listed five methods after LoHa came
    description = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    named = set(re.findall(r"[A-Za-z]+\+?", description["description"]))
    labels = {method.label for method in registry.registered_methods()}
    assert labels <= named, f"add {sorted(labels - named)} to pyproject.toml's description"


def test_every_method_declares_what_the_rest_derives_from():
    for name in method_names():
        method = get_method(name)
        assert method.name == name and method.label and method.summary
        assert issubclass(method.options, MethodOptions)
        assert method.has_lr_ratio == bool(method.lr_ratio), name
        defaults = method.options()  # every key has a valid default
        config = AdapterConfig.from_peft_config(peft_config(name))
        assert type(config.options) is method.options
        assert set(config.hyperparameters()) == {"dropout", *defaults.option_names()}
        adapted = config.method.layer(nn.Linear(48, 48), config, name="layer")
        assert adapted.config is config


@dataclass(frozen=True)
class _Options(MethodOptions):
    r: int = option(2, positive_int, "rank")


def _method(name: str, **kwargs) -> AdapterMethod:
    return AdapterMethod(name, "X", "a test method", LoRALinear, LoRAOptions, **kwargs)


@pytest.mark.parametrize(
    ("method", "message"),
    [
        (_method("LORA", hf_peft_name_clash="plugin"), "LORA is registered already"),
        (_method("krona"), "must be upper case .* 'KRONA'"),
        (_method("IA3"), "IA3 is also a Hugging Face peft method: declare hf_peft_name_clash"),
        (_method("NEW_METHOD", hf_peft_name_clash="hf"), "must be None, 'plugin' or"),
    ],
)
def test_registration_refuses_duplicates_and_silent_shadowing(method, message):
    before = method_names()
    with pytest.raises(ValueError, match=message):
        register_method(method)
    assert method_names() == before


def test_registration_refuses_options_that_redeclare_common_keys():
    @dataclass(frozen=True)
    class Clashing(MethodOptions):
        dropout: float = option(0.1, lambda n, v: v, "again")

    with pytest.raises(ValueError, match=r"\['dropout'\] are common keys"):
        register_method(AdapterMethod("NEW_METHOD", "X", "x", LoRALinear, Clashing))


@pytest.fixture
def plugin_ia3(monkeypatch):
    """A plugin method named like a Hugging Face one that asks for ``backend``."""
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))
    return register_method(_method("IA3", hf_peft_name_clash="require_backend"))


def test_a_name_in_both_that_requires_backend_is_an_error_naming_both(plugin_ia3):
    config = {"method": "ia3", "peft_config_kwargs": {"target_modules": ["q"]}}
    with pytest.raises(ValueError, match=r"names two methods.*backend: plugin or backend: hf"):
        PeftSpec.parse(config)
    spec = PeftSpec.parse({**config, "backend": "plugin"})
    assert (spec.backend, spec.adapter.method) == ("plugin", plugin_ia3)
    spec = PeftSpec.parse({**config, "backend": "hf"})
    assert (spec.backend, spec.adapter, spec.hf_peft_config["method"]) == ("hf", None, "IA3")


@pytest.mark.parametrize("name", ["LORA", "lokr"])
def test_a_name_in_both_declared_plugin_is_the_plugins_with_a_note(name):
    spec = PeftSpec.parse({"method": name, "peft_config_kwargs": {"target_modules": ["q"]}})
    assert spec.backend == "plugin" and spec.adapter.method.name == name.upper()
    assert spec.backend_note == (
        f"peft_config method {name!r}: using the plugin's {name.upper()}; add backend: hf for "
        f"Hugging Face peft's {name.upper()}."
    )
    hf = PeftSpec.parse({"method": name, "backend": "hf", "peft_config_kwargs": {}})
    assert hf.backend == "hf" and hf.backend_note is None


def test_names_only_one_side_knows_need_no_backend():
    plugin = PeftSpec.parse({"method": "KronA+", "peft_config_kwargs": {"target_modules": ["q"]}})
    assert (plugin.backend, plugin.method, plugin.backend_note) == ("plugin", "KRONA_PLUS", None)
    hf = PeftSpec.parse({"method": "ia3", "peft_config_kwargs": {"target_modules": ["q"]}})
    assert (hf.backend, hf.method, hf.backend_note) == ("hf", "IA3", None)
    with pytest.raises(ValueError, match="'KRONA' is not a Hugging Face peft method"):
        PeftSpec.parse({"method": "KRONA", "backend": "hf"})
    with pytest.raises(ValueError, match=r"'IA3' is not a plugin method .* use one of"):
        PeftSpec.parse({"method": "IA3", "backend": "plugin"})
