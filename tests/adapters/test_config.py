"""Configuration parsing and validation: every bad input names the problem and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from peft_helpers import peft_config
from torch import nn

from terratorch_hsi_peft.adapters import AdapterConfig, apply_peft, get_method
from terratorch_hsi_peft.adapters.config import PEFT_CONFIG_KEYS, PeftSpec
from terratorch_hsi_peft.adapters.kron import resolve_kron_shapes


@pytest.mark.parametrize(
    ("name", "method"),
    [
        ("lora", "LORA"),
        ("LoRA+", "LORA_PLUS"),
        ("krona_plus", "KRONA_PLUS"),
        ("KronA+", "KRONA_PLUS"),
        ("LoKr", "LOKR"),
    ],
)
def test_method_names_are_case_insensitive(name, method):
    assert get_method(name).name == method


def test_defaults_and_round_trip():
    config = AdapterConfig.from_peft_config(peft_config("KRONA_PLUS", a_shape=[24, 24]))
    opts = config.options
    assert (opts.lr_ratio, opts.lr_ratio_factor, opts.zero_factor) == (16.0, "zero", "A")
    assert opts.a_shape == (24, 24) and opts.b_shape is None and opts.scale == 1.0
    assert config.target_modules == ("attn.q", "attn.v")
    assert AdapterConfig.from_peft_config(config.to_peft_config()) == config
    lora = AdapterConfig.from_peft_config(
        {
            "method": "LORA",
            "peft_config_kwargs": {
                "target_modules": ["q"],
                "r": 16,
                "lora_alpha": 32,
                "lora_dropout": 0.1,
            },
        }
    )
    assert (lora.options.r, lora.options.alpha, lora.dropout, lora.replace_qkv) == (
        16,
        32,
        0.1,
        None,
    )


def test_backend_plugin_is_accepted_as_the_factory_spells_it():
    config = {**peft_config("KRONA"), "backend": "plugin"}
    assert AdapterConfig.from_peft_config(config) == AdapterConfig.from_peft_config(
        peft_config("KRONA")
    )


@pytest.mark.parametrize(
    ("config", "error", "message"),
    [
        (
            {"method": "DORA", "peft_config_kwargs": {}},
            ValueError,
            r"'DORA' is not a plugin method .*use one of \['KRONA', 'KRONA_PLUS', .*'LORA_PLUS'\]",
        ),
        ({"peft_config_kwargs": {"target_modules": ["q"]}}, ValueError, "has no 'method'"),
        ({"method": "LORA", "kwargs": {}}, TypeError, r"Unknown peft_config key\(s\) \['kwargs'\]"),
        (
            {"method": "LORA", "backend": "hf", "peft_config_kwargs": {"target_modules": ["q"]}},
            ValueError,
            "backend='hf': apply_peft puts the plugin's adapters on .* backend: hf",
        ),
        (
            {"method": "LORA", "peft_config_kwargs": [["target_modules", "q"]]},
            TypeError,
            "peft_config_kwargs must be a mapping",
        ),
        (peft_config("KRONA", r=4), TypeError, r"\['r'\] are not valid for KRONA; valid keys"),
        (peft_config("LORA", lr_ratio=4), TypeError, r"\['lr_ratio'\] are not valid for LORA"),
        (peft_config("LOKR", scale=2.0), TypeError, "valid keys: .*'alpha', 'a_shape'"),
        ({"method": "LORA", "peft_config_kwargs": {}}, ValueError, "needs 'target_modules'"),
        (peft_config("LORA", r=0), ValueError, "r must be a positive integer"),
        (peft_config("LORA", r=2.5), TypeError, "r must be a positive integer"),
        (peft_config("LORA", alpha=-1), ValueError, "alpha must be a positive"),
        (peft_config("LORA_PLUS", lr_ratio=0), ValueError, "lr_ratio must be a positive"),
        (peft_config("KRONA", dropout=1.0), ValueError, r"dropout must be in \[0, 1\)"),
        (peft_config("KRONA", scale=0), ValueError, "use a non-zero scale"),
        (peft_config("KRONA", a_shape=[24]), ValueError, "two positive integers"),
        (peft_config("KRONA", zero_factor="C"), ValueError, "zero_factor must be 'A' or 'B'"),
        (peft_config("KRONA_PLUS", lr_ratio_factor="W"), ValueError, "'zero', 'A' or 'B'"),
        (peft_config("LORA", targets=[]), TypeError, "non-empty list of module names"),
        (
            {"method": "LORA", "peft_config_kwargs": {"target_modules": "attn.(q"}},
            ValueError,
            "used as a regex, but it does not compile",
        ),
        (
            {
                "method": "LORA",
                "peft_config_kwargs": {"target_modules": ["q"], "alpha": 1, "lora_alpha": 2},
            },
            TypeError,
            "either 'lora_alpha' or 'alpha'",
        ),
    ],
)
def test_bad_configs_name_problem_and_fix(config, error, message):
    with pytest.raises(error, match=message):
        AdapterConfig.from_peft_config(config)


def test_kron_shapes_resolution():
    assert resolve_kron_shapes(768, 768, None, None) == ((24, 24), (32, 32))
    assert resolve_kron_shapes(3072, 768, None, None) == ((48, 24), (64, 32))
    assert resolve_kron_shapes(768, 768, (32, 24), None) == ((32, 24), (24, 32))
    assert resolve_kron_shapes(768, 768, None, (16, 48)) == ((48, 16), (16, 48))
    assert resolve_kron_shapes(768, 768, (24, 24), (32, 32)) == ((24, 24), (32, 32))
    for a, b in [((24, 24), (24, 32)), ((7, 24), None), (None, (5, 5))]:
        with pytest.raises(ValueError, match=r"blk: .* Valid \(a1, b1\): \[\(1, 768\), \(2, 384"):
            resolve_kron_shapes(768, 768, a, b, "blk")


def test_shapes_that_do_not_fit_a_layer_leave_the_model_unchanged():
    model = nn.Sequential(nn.Linear(48, 48), nn.Linear(48, 50))
    before = repr(model)
    with pytest.raises(ValueError, match=r"1: a_shape=\[6, 6\] .* 50x48 weight"):
        apply_peft(model, peft_config("KRONA", targets=["0", "1"], a_shape=[6, 6]))
    assert repr(model) == before


@pytest.mark.parametrize("method", ["LORA", "LORA_PLUS"])
def test_lora_rank_above_the_layer_rank_is_an_error(method):
    # issue 13 item 12: r=1000 on a 64-wide layer was accepted silently
    model = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 32))
    before = repr(model)
    with pytest.raises(ValueError, match=r"0: LoRA rank r=1000 exceeds .* 64x64 weight; r must"):
        apply_peft(model, peft_config(method, ["0"], r=1000))
    with pytest.raises(
        ValueError, match=r"1: .* r must be <= min\(in_features, out_features\) = 32"
    ):
        apply_peft(model, peft_config(method, ["0", "1"], r=33))
    assert repr(model) == before  # nothing swapped in
    apply_peft(model, peft_config(method, ["0", "1"], r=32))  # full rank is allowed


def test_lokr_rank_above_the_factor_rank_is_an_error():
    with pytest.raises(ValueError, match=r"r=9 exceeds the 8x8 second factor's maximum rank 8"):
        apply_peft(nn.Sequential(nn.Linear(64, 64)), peft_config("LOKR", ["0"], r=9))


@pytest.mark.parametrize(
    "config",
    [
        {"method": "LORA", "kwargs": {}},
        {"method": "LORA", "backend": "tf", "peft_config_kwargs": {"target_modules": ["q"]}},
        {"method": "LORA", "peft_config_kwargs": [["target_modules", "q"]]},
        peft_config("KRONA", r=4),
        {"method": "LORA", "peft_config_kwargs": {}},
    ],
    ids=["top-level key", "backend", "kwargs type", "method key", "no targets"],
)
def test_module_and_factory_routes_share_one_parser(config):
    # issue 33: apply_peft and PEFTEncoderDecoderFactory parsed peft_config with their own key
    # lists; now both raise the same error for the same config.
    with pytest.raises((TypeError, ValueError)) as factory_error:
        PeftSpec.parse(config)
    with pytest.raises(type(factory_error.value)) as module_error:
        AdapterConfig.from_peft_config(config)
    assert str(module_error.value) == str(factory_error.value)


def test_every_factory_key_is_known_to_the_module_route(tmp_path):
    # One key list: adapter_path and check_base are known keys here too, refused with the fix.
    adapters = tmp_path / "adapters.safetensors"
    adapters.write_bytes(b"")
    with pytest.raises(ValueError, match=r"adapter_path .*call load_adapters\(module, path\)"):
        AdapterConfig.from_peft_config({**peft_config("LORA"), "adapter_path": str(adapters)})
    assert PEFT_CONFIG_KEYS == (
        "method",
        "backend",
        "replace_qkv",
        "peft_config_kwargs",
        "adapter_path",
        "check_base",
    )


def test_apply_peft_takes_a_method_file_as_the_factory_does():
    method_file = Path(__file__).resolve().parents[2] / "configs" / "methods" / "krona_plus.yaml"
    from_file = AdapterConfig.from_peft_config(method_file)
    spec = PeftSpec.parse(yaml.safe_load(method_file.read_text()))
    assert from_file == spec.adapter
    assert from_file.method.name == "KRONA_PLUS"
