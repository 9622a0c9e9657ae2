"""The plugin registers its documented names with TerraTorch, exactly once."""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import os
import re
import subprocess
import sys
import warnings
from argparse import ArgumentError
from pathlib import Path

import pytest
import yaml
from jsonargparse import ActionConfigFile, ArgumentParser
from terratorch.registry import (
    BACKBONE_REGISTRY,
    FULL_MODEL_REGISTRY,
    MODEL_FACTORY_REGISTRY,
    TERRATORCH_BACKBONE_REGISTRY,
    TERRATORCH_FULL_MODEL_REGISTRY,
)

import terratorch_hsi_peft
from terratorch_hsi_peft import registry
from terratorch_hsi_peft.backbones import SpectralGPTEncoder
from terratorch_hsi_peft.backbones.factories import checkpoint_to_load
from terratorch_hsi_peft.backbones.spectralgpt import SIZES
from terratorch_hsi_peft.pretraining import SpectralGPTMAE

REPO_ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.compat

#: The names docs/plugin.md promises, by registry.
DOCUMENTED = {
    "backbone": ["spectralgpt_vit_base", "spectralgpt_vit_large", "spectralgpt_vit_huge"],
    "model_factory": ["PEFTEncoderDecoderFactory"],
    "full_model": [
        "spectralgpt_mae_vit_base",
        "spectralgpt_mae_vit_large",
        "spectralgpt_mae_vit_huge",
    ],
}


def test_documented_names_are_registered():
    assert terratorch_hsi_peft.PLUGIN_NAMES == DOCUMENTED
    for name in DOCUMENTED["backbone"]:
        assert name in TERRATORCH_BACKBONE_REGISTRY
        assert name in BACKBONE_REGISTRY  # the multi-source view TerraTorch's factories use
        assert f"terratorch_{name}" in BACKBONE_REGISTRY
    for name in DOCUMENTED["model_factory"]:
        assert name in MODEL_FACTORY_REGISTRY
    for name in DOCUMENTED["full_model"]:
        assert name in TERRATORCH_FULL_MODEL_REGISTRY
        assert name in FULL_MODEL_REGISTRY  # the view FullModelFactory builds from


def test_docs_table_lists_the_registered_names():
    page = (REPO_ROOT / "docs" / "plugin.md").read_text()
    for names in DOCUMENTED.values():
        for name in names:
            assert re.search(rf"`{name}`", page), f"docs/plugin.md does not document {name}"


ARCHITECTURE = {
    "base": {"embed_dim": 768, "depth": 12, "num_heads": 12},
    "large": {"embed_dim": 1024, "depth": 24, "num_heads": 16},
    "huge": {"embed_dim": 1280, "depth": 32, "num_heads": 16},
}


@pytest.mark.parametrize("kind", ["backbone", "full_model"])
def test_factories_declare_their_arguments(kind):
    """Each registered builder has an explicit, typed, keyword-only signature (no **kwargs)
    and its own docstring; the sizes share every argument and differ only in their widths."""
    registry = {
        "backbone": TERRATORCH_BACKBONE_REGISTRY,
        "full_model": TERRATORCH_FULL_MODEL_REGISTRY,
    }[kind]
    signatures = {}
    for name in DOCUMENTED[kind]:
        factory = registry[name]
        parameters = inspect.signature(factory).parameters
        assert all(p.kind is p.KEYWORD_ONLY for p in parameters.values()), name
        assert all(p.annotation is not p.empty for p in parameters.values()), name
        assert {"pretrained", "ckpt_path", "ckpt_sha256", "num_bands", "img_size"} <= set(
            parameters
        )
        assert factory.__doc__ and name.rsplit("_", 1)[1].capitalize() in factory.__doc__
        size = ARCHITECTURE[name.rsplit("_", 1)[1]]
        assert {key: parameters[key].default for key in size} == size, name
        signatures[name] = {n: p.default for n, p in parameters.items() if n not in size}
        documented = re.findall(r"^    (\w+):", inspect.getdoc(factory), flags=re.MULTILINE)
        assert documented == list(parameters), name
    first, *others = signatures.values()
    assert all(other == first for other in others)


def _declaration(name: str) -> list[inspect.Parameter]:
    """What the factory ``name`` should take, read from the one declaration: the checkpoint
    options, then the encoder's arguments (a backbone: and ``padding``) or the MAE's."""
    checkpoint = [
        p
        for p in inspect.signature(checkpoint_to_load, eval_str=True).parameters.values()
        if p.kind is p.KEYWORD_ONLY
    ]
    if name.startswith("spectralgpt_mae_vit_"):
        return [*checkpoint, *inspect.signature(SpectralGPTMAE).parameters.values()]
    encoder = inspect.signature(SpectralGPTEncoder, eval_str=True).parameters.values()
    padding = inspect.Parameter("padding", inspect.Parameter.KEYWORD_ONLY, annotation=str)
    return [*checkpoint, *encoder, padding.replace(default="reflect")]


FACTORIES = [*DOCUMENTED["backbone"], *DOCUMENTED["full_model"]]


def _factory(name: str):
    if name in DOCUMENTED["backbone"]:
        return TERRATORCH_BACKBONE_REGISTRY[name]
    return TERRATORCH_FULL_MODEL_REGISTRY[name]


@pytest.mark.parametrize("name", FACTORIES)
def test_factory_signature_is_the_declaration_with_the_size_defaults(name):
    """Every argument of the declaration, in its order, typed as declared (real types, not
    strings), with the declared default except the size's architecture."""
    factory = _factory(name)
    size = ARCHITECTURE[name.rsplit("_", 1)[1]]
    expected = {p.name: (p.annotation, size.get(p.name, p.default)) for p in _declaration(name)}
    parameters = inspect.signature(factory).parameters
    assert {n: (p.annotation, p.default) for n, p in parameters.items()} == expected
    assert list(parameters) == list(expected)
    assert parameters["num_bands"].annotation is int
    assert parameters["ckpt_path"].annotation == (str | None)
    assert SIZES == ARCHITECTURE  # the table the factories read holds the official shapes


def test_mae_takes_the_encoder_arguments_but_the_feature_ones():
    mae = inspect.signature(SpectralGPTMAE).parameters
    encoder = inspect.signature(SpectralGPTEncoder, eval_str=True).parameters
    shared = [n for n in encoder if n not in ("out_indices", "group_fusion", "cls_token")]
    assert list(mae)[: len(shared)] == shared
    assert all(mae[n].default == encoder[n].default for n in shared)
    assert all(mae[n].annotation == encoder[n].annotation for n in shared)
    assert list(mae)[len(shared) :] == [
        "decoder_embed_dim",
        "decoder_depth",
        "decoder_num_heads",
        "mask_ratio",
        "norm_pix_loss",
    ]
    with pytest.raises(
        TypeError, match=r"SpectralGPTMAE got unknown argument\(s\) \['cls_token'\]"
    ):
        SpectralGPTMAE(cls_token=False)


def _jsonargparse(component) -> tuple[ArgumentParser, dict]:
    """The parser jsonargparse (the library of TerraTorch's CLI) builds from a factory's or
    class's signature, and the defaults its ``--print_config`` writes, read back as YAML."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile)  # which brings --print_config
    if inspect.isclass(component):
        parser.add_class_arguments(component)
    else:
        parser.add_function_arguments(component)
    output = io.StringIO()
    with contextlib.redirect_stdout(output), pytest.raises(SystemExit):
        parser.parse_args(["--print_config"])
    return parser, yaml.safe_load(output.getvalue())


@pytest.mark.parametrize("name", [*FACTORIES, "SpectralGPTMAE"])
def test_jsonargparse_lists_every_argument_with_its_type_and_default(name):
    if name == "SpectralGPTMAE":
        component, expected = SpectralGPTMAE, inspect.signature(SpectralGPTMAE).parameters
    else:
        component = _factory(name)
        size = ARCHITECTURE[name.rsplit("_", 1)[1]]
        expected = {
            p.name: p.replace(default=size.get(p.name, p.default)) for p in _declaration(name)
        }
    parser, printed = _jsonargparse(component)
    assert printed == {n: p.default for n, p in expected.items()}
    # The types are enforced: a fraction is no int, a word no float or bool.
    for parameter in expected.values():
        bad = {int: "1.5", float: "many", bool: "maybe"}.get(parameter.annotation)
        if bad is not None:
            with pytest.raises(ArgumentError):
                parser.parse_args([f"--{parameter.name}={bad}"])
    assert parser.parse_args(["--depth=3", "--mlp_ratio=2"]).as_dict()["depth"] == 3


def test_unknown_arguments_name_the_valid_ones():
    for build, name, where in (
        (BACKBONE_REGISTRY.build, "spectralgpt_vit_base", "backbone_<name> in YAML"),
        (FULL_MODEL_REGISTRY.build, "spectralgpt_mae_vit_base", "model_args next to 'model'"),
    ):
        with pytest.raises(TypeError, match=rf"{name} got unknown argument\(s\) \['imgsize'\]. "
                           rf"Valid arguments \({re.escape(where)}\): \[.*'img_size'"):  # fmt: skip
            build(name, imgsize=32)


def test_importing_again_registers_nothing_twice():
    sizes = (
        len(TERRATORCH_BACKBONE_REGISTRY),
        len(MODEL_FACTORY_REGISTRY),
        len(TERRATORCH_FULL_MODEL_REGISTRY),
    )
    first = {name: TERRATORCH_BACKBONE_REGISTRY[name] for name in DOCUMENTED["backbone"]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for module in (
            "terratorch_hsi_peft.backbones.factories",
            "terratorch_hsi_peft.models",
            "terratorch_hsi_peft.pretraining.factories",
        ):
            importlib.reload(importlib.import_module(module))
        importlib.reload(terratorch_hsi_peft)
    assert (
        len(TERRATORCH_BACKBONE_REGISTRY),
        len(MODEL_FACTORY_REGISTRY),
        len(TERRATORCH_FULL_MODEL_REGISTRY),
    ) == sizes
    assert {name: TERRATORCH_BACKBONE_REGISTRY[name] for name in first} == first
    assert terratorch_hsi_peft.PLUGIN_NAMES == DOCUMENTED


def test_plugin_import_is_silent_and_leaves_terratorch_alone():
    """A fresh interpreter with the automatic import switched off: importing TerraTorch alone
    does not import the plugin, and importing the plugin warns nothing. (With it on, see
    tests/test_autoload.py and tests/test_wheel_install.py.)"""
    code = (
        "import sys, warnings\n"
        "import terratorch\n"
        "assert 'terratorch_hsi_peft' not in sys.modules\n"
        "warnings.simplefilter('error')\n"
        "import terratorch_hsi_peft\n"
        "from terratorch.registry import BACKBONE_REGISTRY\n"
        "assert 'spectralgpt_vit_base' in BACKBONE_REGISTRY\n"
    )
    env = {**os.environ, "TERRATORCH_HSI_PEFT_AUTOLOAD": "0"}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT, env=env)


def test_register_once_refuses_foreign_clash():
    def spectralgpt_clash():  # registered by someone else under a name the plugin wants
        return None

    TERRATORCH_BACKBONE_REGISTRY.register(spectralgpt_clash)
    try:

        def spectralgpt_clash():  # same name, another module/qualname
            return None

        spectralgpt_clash.__qualname__ = "other.spectralgpt_clash"
        with pytest.raises(RuntimeError, match="will not overwrite"):
            registry.register_backbone(spectralgpt_clash)
    finally:
        TERRATORCH_BACKBONE_REGISTRY._registry.pop("spectralgpt_clash")
