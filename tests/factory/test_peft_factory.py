"""PEFTEncoderDecoderFactory: what trains, freeze_backbone, errors, hf backend, adapter files."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import yaml
from safetensors import safe_open
from terratorch.models.encoder_decoder_factory import EncoderDecoderFactory
from terratorch.registry import MODEL_FACTORY_REGISTRY
from terratorch.tasks import SemanticSegmentationTask

from terratorch_hsi_peft.adapters import adapter_layers, method_names
from terratorch_hsi_peft.models import (
    PEFTEncoderDecoderFactory,
    load_model_adapters,
    merge_model_adapters,
    save_model_adapters,
    unmerge_model_adapters,
)

# Also run against the newest TerraTorch on Python 3.12 (make compat).
pytestmark = pytest.mark.compat

PLUGIN_METHODS = method_names()


def build(args: dict, peft_config: dict | None, seed: int = 0, task: str = "segmentation"):
    torch.manual_seed(seed)
    return PEFTEncoderDecoderFactory().build_model(task, peft_config=peft_config, **args)


def adapter_names(encoder: torch.nn.Module) -> set[str]:
    return {
        f"{layer_name}.{name}"
        for layer_name, layer in adapter_layers(encoder).items()
        for name in layer.adapter_parameters()
    }


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return ((value - reference).norm() / reference.norm()).item()


def trainable(module: torch.nn.Module) -> set[str]:
    return {name for name, p in module.named_parameters() if p.requires_grad}


def test_factory_is_registered_for_yaml_use():
    assert "PEFTEncoderDecoderFactory" in MODEL_FACTORY_REGISTRY
    assert isinstance(
        MODEL_FACTORY_REGISTRY.build("PEFTEncoderDecoderFactory"), PEFTEncoderDecoderFactory
    )


@pytest.mark.parametrize("method", PLUGIN_METHODS)
def test_adapters_train_base_frozen_and_output_starts_at_stock_model(
    method, prithvi_args, prithvi_peft
):
    # Method names are case-insensitive; backend: plugin also picks a name Hugging Face peft has.
    prithvi_peft.update(method=method.lower(), backend="plugin")
    model = build(prithvi_args, prithvi_peft)
    adapters = adapter_names(model.encoder)
    assert len(adapter_layers(model.encoder)) == 8  # q and v of 4 blocks
    assert trainable(model.encoder) == adapters
    outside = [(n, p) for n, p in model.named_parameters() if not n.startswith("encoder.")]
    assert outside and all(p.requires_grad for _, p in outside)  # necks, decoder, head

    torch.manual_seed(0)  # same seed: same base weights; adapters start as a zero update
    stock = EncoderDecoderFactory().build_model("segmentation", **prithvi_args)
    model.eval(), stock.eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x).output, stock(x).output, rtol=1e-5, atol=1e-6)


def test_without_peft_config_it_is_the_stock_factory(prithvi_args):
    model = build(prithvi_args, None)
    torch.manual_seed(0)
    stock = EncoderDecoderFactory().build_model("segmentation", **prithvi_args)
    assert type(model) is type(stock)
    for (name, value), (stock_name, stock_value) in zip(
        model.state_dict().items(), stock.state_dict().items(), strict=True
    ):
        assert name == stock_name and torch.equal(value, stock_value)
    assert all(p.requires_grad for p in model.parameters())


def test_string_values_of_cli_overrides_build_the_typed_model(prithvi_args, prithvi_peft):
    # What jsonargparse passes for `--model.init_args.model_args.<key> <value>` overrides.
    strings = {**prithvi_args, "backbone_pretrained": "false", "num_classes": "5"}
    strings.update(backbone_depth="4", head_dropout="0.25")
    typed = {**prithvi_args, "num_classes": 5, "head_dropout": 0.25}
    model, reference = build(strings, prithvi_peft), build(typed, prithvi_peft)
    assert str(model) == str(reference)
    for (name, value), (_, expected) in zip(
        model.state_dict().items(), reference.state_dict().items(), strict=True
    ):
        assert torch.equal(value, expected), name
    assert build(prithvi_args, "null").encoder is not None  # "null": no peft_config


def test_freeze_backbone_keeps_adapters_trainable(prithvi_args, prithvi_peft):
    task = SemanticSegmentationTask(
        model_factory="PEFTEncoderDecoderFactory",
        model_args={**prithvi_args, "peft_config": prithvi_peft},
        freeze_backbone=True,  # TerraTorch calls model.freeze_encoder() after the factory
        loss="ce",
        ignore_index=-1,
    )
    model = task.model
    assert trainable(model.encoder) == adapter_names(model.encoder) != set()
    assert all(p.requires_grad for n, p in model.named_parameters() if n.startswith("decoder."))

    model.encoder.patch_embed.proj.weight.requires_grad_(True)  # a base weight thawed by hand
    model.freeze_encoder()
    assert trainable(model.encoder) == adapter_names(model.encoder)


def test_learned_group_fusion_of_spectralgpt_stays_trainable(spectralgpt_args):
    peft_config = {"method": "KRONA_PLUS", "peft_config_kwargs": {"target_modules": ["q", "v"]}}
    model = build(spectralgpt_args, peft_config)
    fusion = {n for n, _ in model.encoder.named_parameters() if n.startswith("fusion_layers.")}
    assert len(fusion) == 4
    expected = adapter_names(model.encoder) | fusion
    assert trainable(model.encoder) == expected
    model.freeze_encoder()
    assert trainable(model.encoder) == expected


@pytest.mark.parametrize(
    ("peft_config", "error", "message"),
    [
        ({"method": "KRONA", "lr": 1.0}, TypeError, r"Unknown peft_config key\(s\) \['lr'\]"),
        ({"peft_config_kwargs": {}}, ValueError, "no 'method'"),
        ({"method": "KRONECKER"}, ValueError, "Unknown PEFT method 'KRONECKER'.*backend: hf"),
        ({"method": "KRONA", "backend": "torch"}, ValueError, "not one of"),
        (
            {"method": "KRONA", "peft_config_kwargs": {"target_modules": ["attn.q"]}},
            ValueError,
            "matches no module",
        ),
        (
            {"method": "KRONA", "peft_config_kwargs": {"target_modules": ["q_linear"], "r": 4}},
            TypeError,
            r"\['r'\] are not valid for KRONA",
        ),
        (
            {"method": "KRONA", "adapter_path": "/nonexistent/adapters.safetensors"},
            ValueError,
            "is not a file",
        ),
        (
            {"method": "KRONA", "check_base": "no"},
            TypeError,
            "check_base must be true or false, got 'no'",
        ),
        (
            {"method": "KRONA", "check_base": False},
            ValueError,
            "check_base: false only applies to an adapter_path",
        ),
    ],
)
def test_bad_peft_config_is_a_clear_error(prithvi_args, peft_config, error, message):
    peft_config = {"replace_qkv": "qkv", **peft_config}
    with pytest.raises(error, match=message):
        build(prithvi_args, peft_config)


def test_a_name_both_backends_know_logs_the_one_used_and_the_other(
    prithvi_args, prithvi_peft, caplog
):
    with caplog.at_level(logging.INFO):
        build(prithvi_args, {**prithvi_peft, "method": "lora"})
    assert "using the plugin's LORA; add backend: hf for Hugging Face peft's LORA" in caplog.text


def test_hf_backend_is_terratorchs_own_peft_path(prithvi_args, prithvi_peft):
    hf_config = {**prithvi_peft, "method": "LORA", "backend": "hf"}
    model = build(prithvi_args, hf_config)
    torch.manual_seed(0)
    stock_config = {k: v for k, v in hf_config.items() if k != "backend"}
    stock = EncoderDecoderFactory().build_model(
        "segmentation", peft_config=stock_config, **prithvi_args
    )
    for (name, value), (stock_name, stock_value) in zip(
        model.state_dict().items(), stock.state_dict().items(), strict=True
    ):
        assert name == stock_name and torch.equal(value, stock_value)
    encoder_trainable = trainable(model.encoder)
    assert len(encoder_trainable) == 16  # lora_A and lora_B of q and v in 4 blocks
    assert all(".lora_A." in n or ".lora_B." in n for n in encoder_trainable)
    model.freeze_encoder()
    assert trainable(model.encoder) == encoder_trainable


@pytest.mark.parametrize("backend", ["plugin", "hf"])
def test_a_typo_in_one_target_entry_is_an_error_on_both_backends(
    prithvi_args, prithvi_peft, backend
):
    # issue 13 item 2 through the factory: [q_linear, v_lineer] adapted q_linear only
    prithvi_peft.update(method="LORA", backend=backend)
    prithvi_peft["peft_config_kwargs"] = {"target_modules": ["q_linear", "v_lineer"]}
    with pytest.raises(ValueError, match="target_modules entry 'v_lineer' matches no module"):
        build(prithvi_args, prithvi_peft)


@pytest.mark.parametrize("backend", ["plugin", "hf"])
def test_merging_nan_adapters_is_refused_on_both_backends(prithvi_args, prithvi_peft, backend):
    # issue 13 item 5: MergeAdaptersForPredict merges through merge_model_adapters
    model = build(prithvi_args, {**prithvi_peft, "method": "LORA", "backend": backend})
    factor = next(p for name, p in model.encoder.named_parameters() if "lora_B" in name)
    with torch.no_grad():
        factor.fill_(float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        merge_model_adapters(model)


def test_hf_only_method_names_pass_through_to_hf(prithvi_args, prithvi_peft):
    prithvi_peft["peft_config_kwargs"]["feedforward_modules"] = []  # IA3 needs the key
    model = build(prithvi_args, {**prithvi_peft, "method": "IA3"})
    assert type(model.encoder).__name__ == "PeftModel"
    assert all(".ia3_l." in n for n in trainable(model.encoder))


def _train_like(model: torch.nn.Module, seed: int = 1) -> None:
    """Give every trainable tensor and every BatchNorm statistic a random value."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
        for name, buffer in model.named_buffers():
            if "running_" in name:
                buffer.copy_(torch.rand(buffer.shape, generator=generator) + 0.5)


def test_adapter_file_reproduces_the_trained_model(tmp_path, prithvi_args, prithvi_peft):
    prithvi_peft["method"] = "KRONA_PLUS"
    trained = build(prithvi_args, prithvi_peft)
    _train_like(trained)
    path = save_model_adapters(trained, tmp_path / "adapters.safetensors")

    # the same base weights (seed 0: the backbone is randomly initialised), untrained adapters
    fresh = build(prithvi_args, {**prithvi_peft, "adapter_path": str(path)}, seed=0)
    trained.eval(), fresh.eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(fresh(x).output, trained(x).output)
    with safe_open(path, framework="pt") as f:
        keys = set(f.keys())
    outside = {key for key in trained.state_dict() if not key.startswith("encoder.")}
    assert keys == outside | {f"encoder.{name}" for name in adapter_names(trained.encoder)}


def test_a_checkpoint_file_named_with_digits_reaches_the_backbone_as_a_path(
    tmp_path, monkeypatch, spectralgpt_args, prithvi_peft
):
    # model_args strings are read as YAML for dotted CLI overrides; a path "2024" must stay text
    encoder = build(spectralgpt_args, None).encoder
    torch.save({"model": encoder.state_dict()}, tmp_path / "2024")
    monkeypatch.chdir(tmp_path)
    config = {**prithvi_peft, "replace_qkv": None}
    config["peft_config_kwargs"] = {"target_modules": ["attn.q"]}
    args = {**spectralgpt_args, "backbone_ckpt_path": "2024"}
    model = PEFTEncoderDecoderFactory().build_model("segmentation", peft_config=config, **args)
    assert model.encoder.load_report.source == "2024"
    assert torch.equal(model.encoder.norm.weight, encoder.norm.weight)


def test_adapter_file_of_another_random_base_is_refused(
    tmp_path, monkeypatch, spectralgpt_args, prithvi_peft
):
    # issue 13 item 3: adapters trained on a random backbone (seed 0) reloaded into another
    # random backbone (seed 1) without a word, giving other predictions
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)  # restored after the test
    config = {**prithvi_peft, "method": "KRONA_PLUS", "replace_qkv": None}
    config["peft_config_kwargs"] = {"target_modules": ["attn.q", "attn.v"]}
    factory = PEFTEncoderDecoderFactory()

    def seeded(seed: int, **extra):
        pl.seed_everything(seed)
        return factory.build_model(
            "segmentation", peft_config={**config, **extra}, **spectralgpt_args
        )

    trained = seeded(0)
    assert trained.encoder.weights_origin == "random init, seed 0"
    _train_like(trained)
    path = save_model_adapters(trained, tmp_path / "adapters.safetensors")
    with pytest.raises(ValueError) as caught:
        seeded(1, adapter_path=str(path))
    message = str(caught.value)
    assert "was trained on other base weights: the file expects random init, seed 0" in message
    assert "this model has random init, seed 1" in message
    assert "the same seed (seed_everything)" in message
    same = seeded(0, adapter_path=str(path)).eval()
    x = torch.randn(2, 6, 16, 16)
    assert torch.equal(same(x).output, trained.eval()(x).output)


def test_the_spectralgpt_origin_travels_with_the_weights(
    tmp_path, monkeypatch, spectralgpt_args, prithvi_peft
):
    # issue 31 item 2: weights restored from a checkpoint (seed 0) into a model built under
    # another seed kept the new seed as their origin
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)  # restored after the test
    config = {**prithvi_peft, "method": "KRONA_PLUS", "replace_qkv": None}
    config["peft_config_kwargs"] = {"target_modules": ["attn.q", "attn.v"]}
    factory = PEFTEncoderDecoderFactory()

    def seeded(seed: int, **extra):
        pl.seed_everything(seed)
        return factory.build_model(
            "segmentation", peft_config={**config, **extra}, **spectralgpt_args
        )

    trained = seeded(0)
    torch.save({"state_dict": trained.state_dict()}, tmp_path / "run.ckpt")
    resumed = seeded(1)
    assert resumed.encoder.weights_origin == "random init, seed 1"
    state = torch.load(tmp_path / "run.ckpt", weights_only=True)["state_dict"]
    resumed.load_state_dict(state)
    assert resumed.encoder.weights_origin == "random init, seed 0"
    path = save_model_adapters(resumed, tmp_path / "adapters.safetensors")
    with safe_open(path, framework="pt") as f:
        assert f.metadata()["base_weights_origin"] == "random init, seed 0"
    seeded(0, adapter_path=str(path))  # the base it names: loads
    # a plain state dict (no per-module metadata, e.g. an older checkpoint) keeps the origin
    fresh = seeded(1)
    fresh.load_state_dict(dict(state))
    assert fresh.encoder.weights_origin == "random init, seed 1"


def test_merged_forward_equals_unmerged(prithvi_args, prithvi_peft):
    for method in PLUGIN_METHODS:
        model = build(prithvi_args, {**prithvi_peft, "method": method, "backend": "plugin"})
        model.eval()
        _train_like(model)
        x = torch.randn(2, 3, 32, 32)
        unmerged = model(x).output
        merge_model_adapters(model)
        merged = model(x).output
        unmerge_model_adapters(model)
        assert relative_error(merged, unmerged) < 1e-5, method
        torch.testing.assert_close(model(x).output, unmerged)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_classes": 4}, r"head\.head\.2\.weight: file shape \[3, 4, 1, 1\], model \[4, 4"),
        ({"method": "LORA_PLUS"}, "method: file KRONA_PLUS, model LORA_PLUS"),
        ({"lr_ratio": 4.0}, "lr_ratio: file 16.0, model 4.0"),
    ],
)
def test_adapter_file_that_does_not_fit_is_refused(
    tmp_path, prithvi_args, prithvi_peft, change, message
):
    prithvi_peft["method"] = "KRONA_PLUS"
    path = save_model_adapters(build(prithvi_args, prithvi_peft), tmp_path / "a.safetensors")
    args = {**prithvi_args, "num_classes": change.get("num_classes", 3)}
    config = {**prithvi_peft, "method": change.get("method", "KRONA_PLUS")}
    if "lr_ratio" in change:
        config["peft_config_kwargs"] = {**config["peft_config_kwargs"], "lr_ratio": 4.0}
    other = build(args, config)
    with pytest.raises(ValueError, match=message):
        load_model_adapters(other, path)


def test_adapter_files_need_the_plugin_backend(tmp_path, prithvi_args, prithvi_peft):
    model = build(prithvi_args, {**prithvi_peft, "method": "LORA", "backend": "hf"})
    with pytest.raises(ValueError, match="save_pretrained"):
        save_model_adapters(model, tmp_path / "a.safetensors")


@pytest.mark.cuda
def test_on_cuda_under_bf16_autocast(prithvi_args, prithvi_peft):
    model = build(prithvi_args, {**prithvi_peft, "method": "KRONA_PLUS"}).cuda()
    x = torch.randn(2, 3, 32, 32, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(x).output.float().square().mean()
    loss.backward()
    grads = [p.grad for p in model.encoder.parameters() if p.requires_grad]
    assert grads and all(g is not None and g.is_cuda for g in grads)
    _train_like_on_device(model)
    model.eval()
    with torch.no_grad():
        unmerged = model(x).output
        merge_model_adapters(model)
        merged = model(x).output
        unmerge_model_adapters(model)
    assert relative_error(merged.float(), unmerged.float()) < 1e-4


def _train_like_on_device(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(std=0.1)


@pytest.mark.parametrize("method", ["KRONA_PLUS", "krona+", "KRONA", "LORA_PLUS"])
def test_plugin_method_under_terratorchs_own_factory_is_a_clear_error(prithvi_args, method):
    """Forgetting to switch model_factory: a ValueError naming the fix, not a bare KeyError."""
    peft_config = {
        "method": method,
        "replace_qkv": "qkv",
        "peft_config_kwargs": {"target_modules": ["q_linear", "v_linear"]},
    }
    with pytest.raises(ValueError, match=r"Set model_factory: PEFTEncoderDecoderFactory"):
        EncoderDecoderFactory().build_model("segmentation", peft_config=peft_config, **prithvi_args)
    with pytest.raises(ValueError, match=r"terratorch-hsi-peft method"):
        SemanticSegmentationTask(
            model_factory="EncoderDecoderFactory",
            model_args={**prithvi_args, "peft_config": peft_config},
            loss="ce",
            ignore_index=-1,
        )


def test_hugging_face_methods_still_pass_through_terratorchs_own_factory(prithvi_args):
    peft_config = {
        "method": "LORA",
        "replace_qkv": "qkv",
        "peft_config_kwargs": {"target_modules": ["q_linear", "v_linear"], "r": 2},
    }
    model = EncoderDecoderFactory().build_model(
        "segmentation", peft_config=peft_config, **prithvi_args
    )
    assert any("lora_A" in name for name, _ in model.encoder.named_parameters())


def test_readme_snippet_works_on_prithvi_as_written(prithvi_args):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    snippet = readme.split("Two lines switch an existing TerraTorch pipeline")[1]
    block = yaml.safe_load(snippet.split("```yaml\n")[1].split("```")[0])
    init_args = block["model"]["init_args"]
    assert init_args["model_factory"] == "PEFTEncoderDecoderFactory"
    model = MODEL_FACTORY_REGISTRY.build(init_args["model_factory"]).build_model(
        "segmentation", **{**prithvi_args, **init_args["model_args"]}
    )
    assert len(adapter_layers(model.encoder)) == 2 * 4  # q and v of each of the 4 blocks


@pytest.mark.parametrize("method", ["LORA", "LOKR", "LOHA"])
def test_a_hugging_face_name_under_terratorchs_own_factory_stays_terratorchs(
    prithvi_args, method, monkeypatch
):
    """Without peft installed, stock TerraTorch's own error ("pip install terratorch[peft]"), not
    a switch to the plugin's factory (which would swap Hugging Face's method for the plugin's)."""
    monkeypatch.setattr("terratorch.models.peft_utils._has_peft", False)
    monkeypatch.setattr(
        "terratorch_hsi_peft.models.peft_factory.hf_peft_methods", lambda: frozenset()
    )
    peft_config = {
        "method": method,
        "replace_qkv": "qkv",
        "peft_config_kwargs": {"target_modules": ["q_linear", "v_linear"]},
    }
    with pytest.raises(ImportError, match=r"pip install terratorch\[peft\]"):
        EncoderDecoderFactory().build_model("segmentation", peft_config=peft_config, **prithvi_args)
