"""Adapter files: exact round trip, metadata, atomic writes, clear errors on any mismatch."""

from __future__ import annotations

import json
import re

import pytest
import torch
from peft_helpers import ALL_METHODS, ToyViT, peft_config, randomise_adapters
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from terratorch_hsi_peft.adapters import (
    adapter_file_bytes,
    adapter_layers,
    apply_peft,
    load_adapters,
    merge_adapters,
    save_adapters,
    unmerge_adapters,
)
from terratorch_hsi_peft.adapters.io import base_fingerprint, base_sketch, carry_origin


class ViTWithHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = ToyViT()
        self.head = nn.Linear(48, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x).mean(1))


def tuned_model(method: str, seed: int, **kwargs) -> ViTWithHead:
    torch.manual_seed(0)  # same pretrained weights for every model
    model = ViTWithHead()
    apply_peft(model, peft_config(method, **kwargs))
    model.head.requires_grad_(True)
    randomise_adapters(model, seed=seed)
    with torch.no_grad():
        model.head.weight.normal_(generator=torch.Generator().manual_seed(seed))
    return model


@pytest.mark.parametrize("method", ALL_METHODS)
def test_round_trip_reproduces_outputs_exactly(method, tmp_path):
    source, target = tuned_model(method, seed=1), tuned_model(method, seed=2)
    x = torch.randn(2, 7, 48)
    assert not torch.equal(source(x), target(x))
    path = save_adapters(source, tmp_path / "a.safetensors", include=["head"])
    loaded = load_adapters(target, path)
    assert torch.equal(source(x), target(x))
    adapters = {
        f"{name}.{tensor}"
        for name, layer in adapter_layers(target).items()
        for tensor in layer.adapter_parameters()
    }
    assert set(loaded) == adapters | {"head.weight", "head.bias"}


def test_file_holds_only_tuned_tensors_and_metadata(tmp_path):
    model = tuned_model("KRONA_PLUS", seed=1, a_shape=[6, 6])
    path = save_adapters(model, tmp_path / "a.safetensors", include=["head"], base_model_name="toy")
    with safe_open(path, framework="pt") as f:
        keys, meta = set(f.keys()), f.metadata()
    layers = [f"backbone.blocks.{i}.attn.{m}" for i in range(2) for m in "qv"]
    expected = {f"{n}.krona_B" for n in layers} | {
        f"{n}.parametrizations.krona_A.original" for n in layers
    }
    assert keys == expected | {"head.weight", "head.bias"}
    assert meta["format_version"] == "1" and meta["method"] == "KRONA_PLUS"
    assert meta["base_model_name"] == "toy" and meta["base_model_class"].endswith("ViTWithHead")
    assert json.loads(meta["targets"]) == sorted(layers)
    assert json.loads(meta["shapes"])[f"{layers[0]}.krona_B"] == [8, 8]
    assert json.loads(meta["included"]) == ["head.bias", "head.weight"]
    kwargs = json.loads(meta["peft_config"])["peft_config_kwargs"]
    assert kwargs["a_shape"] == [6, 6] and kwargs["lr_ratio"] == 16.0
    assert path.stat().st_size == adapter_file_bytes(model, include=["head"], base_model_name="toy")


@pytest.mark.parametrize(
    ("other", "message"),
    [
        (peft_config("KRONA"), "method: file KRONA_PLUS, model KRONA"),
        (peft_config("KRONA_PLUS", lr_ratio=4.0), "lr_ratio: file 16.0, model 4.0"),
        (peft_config("KRONA_PLUS", targets=["attn.q"]), "adapted layers differ"),
        (peft_config("KRONA_PLUS", a_shape=[4, 4]), "a_shape"),
    ],
)
def test_loading_into_a_mismatched_model_fails_clearly(other, message, tmp_path):
    path = save_adapters(tuned_model("KRONA_PLUS", seed=1), tmp_path / "a.safetensors")
    torch.manual_seed(0)
    model = apply_peft(ViTWithHead(), other)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=message) as err:
        load_adapters(model, path)
    assert str(path) in str(err.value) and "apply_peft(model, " in str(err.value)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_loading_rejects_other_base_model_and_merged_or_plain_models(tmp_path):
    path = save_adapters(tuned_model("LORA", seed=1), tmp_path / "a.safetensors")
    with pytest.raises(ValueError, match="base model name"):
        load_adapters(tuned_model("LORA", seed=2), path, base_model_name="spectralgpt_vit_base")
    merged = tuned_model("LORA", seed=2)
    merge_adapters(merged)
    with pytest.raises(ValueError, match="unmerge_adapters first"):
        load_adapters(merged, path)
    with pytest.raises(ValueError, match="call apply_peft first"):
        load_adapters(ViTWithHead(), path)
    other_class = apply_peft(ToyViT(), peft_config("LORA"))
    with pytest.raises(ValueError, match="base model class"):
        load_adapters(other_class, path)


def test_corrupt_foreign_and_missing_files(tmp_path):
    model = tuned_model("LOKR", seed=1)
    path = save_adapters(model, tmp_path / "a.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"truncated\.safetensors is not a readable"):
        load_adapters(model, truncated)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_adapters(model, garbage)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, foreign)
    with pytest.raises(ValueError, match="no adapter metadata"):
        load_adapters(model, foreign)
    with pytest.raises(FileNotFoundError, match="No adapter file"):
        load_adapters(model, tmp_path / "missing.safetensors")


def test_failed_save_leaves_no_file_and_keeps_an_old_one(tmp_path):
    model = tuned_model("LORA", seed=1)
    path = save_adapters(model, tmp_path / "a.safetensors")
    old = path.read_bytes()
    with pytest.raises(ValueError, match="include entry 'decoder' matches no tensor"):
        save_adapters(model, path, include=["decoder"])
    with pytest.raises(ValueError, match="include entry"):
        save_adapters(model, tmp_path / "new.safetensors", include=["decoder"])
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors"]
    with pytest.raises(ValueError, match="has no adapters"):
        save_adapters(ToyViT(), tmp_path / "b.safetensors")


def rewrite(path, tmp_path, name: str, metadata=None, tensors=None):
    """A copy of the adapter file ``path`` with changed metadata and/or tensors."""
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
        data = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
    out = tmp_path / name
    save_file({**data, **(tensors or {})}, out, metadata=metadata(meta) if metadata else meta)
    return out


def other_base_model(method: str, base_seed: int) -> ViTWithHead:
    torch.manual_seed(base_seed)
    return apply_peft(ViTWithHead(), peft_config(method))


def test_the_file_size_depends_on_the_layers_not_on_the_weights(tmp_path):
    # The base sketch is written at a fixed width: docs quote adapter file sizes to 0.1 kB, and
    # the digits of other base weights moved them by up to 16 bytes.
    sizes = set()
    for base_seed in range(6):
        model = other_base_model("KRONA_PLUS", base_seed)
        with torch.no_grad():
            for layer in adapter_layers(model).values():
                layer.base_layer.weight.mul_(10.0 ** (base_seed - 3))  # other exponents too
        sketch = base_sketch(model)
        path = save_adapters(model, tmp_path / f"{base_seed}.safetensors")
        with safe_open(path, "pt") as f:
            written = json.loads(f.metadata()["base_weights_sketch"])
        assert set(written) == set(sketch)
        for name, values in sketch.items():
            assert written[name] == pytest.approx(values, rel=1e-9)
        sizes.add(path.stat().st_size)
        assert adapter_file_bytes(model) == path.stat().st_size
    assert len(sizes) == 1, sizes


def test_adapters_refuse_other_base_weights_and_load_on_the_same(tmp_path):
    # issue 13 item 3: adapters of one random base loaded into another without a word
    source = tuned_model("LORA", seed=1)  # base weights from torch.manual_seed(0)
    x = torch.randn(2, 7, 48)
    path = save_adapters(source, tmp_path / "a.safetensors", include=["head"])
    other = other_base_model("LORA", base_seed=1)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(ValueError) as caught:
        load_adapters(other, path)
    message = str(caught.value)
    assert f"{path} was trained on other base weights" in message
    assert "this model has an unrecorded origin (ViTWithHead)" in message
    assert "the same seed (seed_everything)" in message
    assert all(torch.equal(v, before[k]) for k, v in other.state_dict().items())
    load_adapters(other, path, check_base=False)  # deliberate transfer, on request
    same = other_base_model("LORA", base_seed=0)
    load_adapters(same, path)
    assert torch.equal(same(x), source(x))


def test_the_base_fingerprint_survives_merging_and_is_dtype_independent(tmp_path):
    source = tuned_model("KRONA", seed=1)
    fingerprint, sketch = base_fingerprint(source), base_sketch(source)
    merge_adapters(source)
    assert base_fingerprint(source) == fingerprint
    assert base_sketch(source) == sketch
    unmerge_adapters(source)  # weights back only up to rounding: the record is kept
    assert base_fingerprint(source) == fingerprint
    assert base_sketch(source) == sketch
    path = save_adapters(source, tmp_path / "a.safetensors")
    with safe_open(path, framework="pt") as f:
        assert f.metadata()["base_weights_sha256"] == fingerprint
    # the same values in another dtype hash the same (float32 bytes are hashed)
    assert base_fingerprint(tuned_model("KRONA", seed=2).double()) == fingerprint
    rounded = tuned_model("KRONA", seed=2)
    with torch.no_grad():
        for layer in adapter_layers(rounded).values():
            for p in layer.base_layer.parameters():
                p.copy_(p.bfloat16())
    in_float32 = base_fingerprint(rounded)
    assert in_float32 != fingerprint
    assert base_fingerprint(rounded.bfloat16()) == in_float32  # bfloat16 holds these exactly
    # loading other base weights into the layers forgets a digest kept from a merge
    other = other_base_model("KRONA", base_seed=1)
    source.load_state_dict(other.state_dict())
    assert base_fingerprint(source) == base_fingerprint(other) != fingerprint
    assert base_sketch(source) == base_sketch(other) != sketch


HALF = [torch.bfloat16, torch.float16]


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_the_same_base_in_another_precision_loads_and_another_base_is_refused(dtype, tmp_path):
    """Issue 31: adapters saved from a bfloat16/float16 model (precision: bf16-true) were refused
    by the same base in float32, and the other way round; the base check is precision-free."""
    x = torch.randn(2, 7, 48)
    source = tuned_model("LORA", seed=1)
    in_float32 = save_adapters(source, tmp_path / "float32.safetensors", include=["head"])
    half = save_adapters(
        tuned_model("LORA", seed=1).to(dtype), tmp_path / "half.safetensors", include=["head"]
    )
    # saved in half precision, loaded into the float32 base: the half-precision factors
    loaded = other_base_model("LORA", base_seed=0)
    load_adapters(loaded, half)
    torch.testing.assert_close(loaded(x), source(x), rtol=0.02, atol=0.02)  # rounded factors
    # saved in float32, loaded into a half-precision copy of the base
    load_adapters(other_base_model("LORA", base_seed=0).to(dtype), in_float32)
    # across half precisions: a bfloat16 file into a float16 base and the other way round
    other_dtype = HALF[1 - HALF.index(dtype)]
    load_adapters(other_base_model("LORA", base_seed=0).to(other_dtype), half)
    # another base is refused in every precision, naming the layers and the YAML escape
    for path, target_dtype in ((in_float32, dtype), (half, torch.float32), (half, dtype)):
        other = other_base_model("LORA", base_seed=1).to(target_dtype)
        with pytest.raises(ValueError) as caught:
            load_adapters(other, path)
        message = str(caught.value)
        assert f"{path} was trained on other base weights" in message
        assert "4 adapted layer(s) differ by more than 1% of their norm" in message
        assert re.search(r"backbone\.blocks\.0\.attn\.q by \d+\.\d%", message)
        assert "check_base=False in Python, peft_config: {check_base: false} in YAML" in message
        load_adapters(other, path, check_base=False)


def test_the_refusal_tells_the_expected_from_the_found_base(tmp_path):
    """Issue 31: the refusal named the same origin twice; when the recorded origins agree, it
    says the model's weights were changed after they were built."""
    source = tuned_model("LORA", seed=1)
    carry_origin(source, "random init, seed 0")
    path = save_adapters(source, tmp_path / "a.safetensors")
    changed = other_base_model("LORA", base_seed=1)
    carry_origin(changed, "random init, seed 0")
    with pytest.raises(ValueError) as caught:
        load_adapters(changed, path)
    message = str(caught.value)
    assert "the file expects random init, seed 0 (fingerprint " in message
    assert "this model has random init, seed 0 (fingerprint " in message
    fingerprints = re.findall(r"fingerprint ([0-9a-f]{16})", message)
    assert fingerprints == [base_fingerprint(source)[:16], base_fingerprint(changed)[:16]]
    assert (
        "Both name the origin 'random init, seed 0': this model's base weights were changed "
        "after they were built" in message
    )
    other = other_base_model("LORA", base_seed=1)
    carry_origin(other, "random init, seed 1")
    with pytest.raises(ValueError, match="this model has random init, seed 1") as caught:
        load_adapters(other, path)
    assert "Both name" not in str(caught.value)


def test_a_file_with_only_the_exact_fingerprint_is_checked_exactly(tmp_path):
    """Files of the previous version record only base_weights_sha256: still checked, and a
    refusal in another precision says why and how to record the precision-free form."""
    source = tuned_model("LORA", seed=1)
    path = save_adapters(source, tmp_path / "a.safetensors")

    def previous(meta):
        return {k: v for k, v in meta.items() if k != "base_weights_sketch"}

    older = rewrite(path, tmp_path, "older.safetensors", metadata=previous)
    load_adapters(other_base_model("LORA", base_seed=0), older)
    with pytest.raises(ValueError, match=r"records only the exact weights.*save the adapters"):
        load_adapters(other_base_model("LORA", base_seed=0).bfloat16(), older)
    with pytest.raises(ValueError, match="other base weights"):
        load_adapters(other_base_model("LORA", base_seed=1), older)


@pytest.mark.parametrize(
    "sketch", ["[1, 2]", "{not json", json.dumps({"backbone.blocks.0.attn.q": [1.0] * 17})]
)
def test_a_broken_base_sketch_is_named(sketch, tmp_path):
    path = save_adapters(tuned_model("LORA", seed=1), tmp_path / "a.safetensors")
    broken = rewrite(
        path, tmp_path, "b.safetensors", metadata=lambda m: {**m, "base_weights_sketch": sketch}
    )
    with pytest.raises(ValueError, match=r"'base_weights_sketch' should map every adapted layer"):
        load_adapters(other_base_model("LORA", base_seed=0), broken)


def test_a_file_without_a_base_record_loads_with_a_warning(tmp_path):
    source = tuned_model("LORA", seed=1)
    path = save_adapters(source, tmp_path / "a.safetensors")

    def old(meta):
        return {k: v for k, v in meta.items() if not k.startswith("base_weights_")}

    older = rewrite(path, tmp_path, "old.safetensors", metadata=old)
    target = other_base_model("LORA", base_seed=0)
    with pytest.warns(UserWarning, match=r"old\.safetensors does not record the base weights"):
        load_adapters(target, older)


def test_nan_tensors_are_refused_at_load(tmp_path):
    # issue 13 item 5: NaN adapter tensors loaded and every output became NaN
    source = tuned_model("LORA", seed=1)
    path = save_adapters(source, tmp_path / "a.safetensors", include=["head"])
    key = "backbone.blocks.1.attn.v.lora_A"
    broken = source.state_dict()[key].clone()
    broken[0, 0] = float("nan")
    bad = rewrite(
        path,
        tmp_path,
        "nan.safetensors",
        tensors={key: broken, "head.bias": torch.full((5,), float("inf"))},
    )
    target = other_base_model("LORA", base_seed=0)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(
        ValueError, match=rf"nan\.safetensors holds NaN or Inf in {key}, head\.bias"
    ):
        load_adapters(target, bad)
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda m: {k: v for k, v in m.items() if k != "format_version"},
            "lacks the adapter metadata key 'format_version'",
        ),
        (
            lambda m: {k: v for k, v in m.items() if k != "peft_config"},
            "lacks the adapter metadata key 'peft_config'",
        ),
        (lambda m: {**m, "targets": "[not json"}, r"metadata 'targets' is not valid JSON"),
        (
            lambda m: {**m, "targets": '{"a": 1}'},
            r"metadata 'targets' should be a JSON list, got dict",
        ),
        (lambda m: {**m, "targets": "[1, 2]"}, r"metadata 'targets' should list names"),
        (
            lambda m: {**m, "peft_config": '{"method": "LORA"}'},
            r"'peft_config' lacks 'peft_config_kwargs'",
        ),
        (lambda m: {**m, "shapes": "{}"}, r"'shapes' does not describe the tensors the file holds"),
    ],
)
def test_broken_metadata_is_a_clear_error_naming_file_and_key(change, message, tmp_path):
    # issue 13 item 11: raw KeyError: 'peft_config' / JSONDecodeError
    path = save_adapters(tuned_model("LORA", seed=1), tmp_path / "a.safetensors")
    broken = rewrite(path, tmp_path, "broken.safetensors", metadata=change)
    with pytest.raises(ValueError, match=message) as caught:
        load_adapters(other_base_model("LORA", base_seed=0), broken)
    assert str(broken) in str(caught.value) and "write it again with save_adapters" in str(
        caught.value
    )


@pytest.mark.cuda
def test_the_base_fingerprint_and_nan_checks_on_cuda(tmp_path):
    source = tuned_model("KRONA_PLUS", seed=1)
    fingerprint = base_fingerprint(source)
    source.cuda()
    assert base_fingerprint(source) == fingerprint  # device-independent
    path = save_adapters(source, tmp_path / "a.safetensors", include=["head"])
    target = other_base_model("KRONA_PLUS", base_seed=0)
    load_adapters(target, path)  # written on the GPU, loaded on the CPU
    merge_adapters(source)
    assert base_fingerprint(source) == fingerprint
    unmerge_adapters(source)
    with torch.no_grad():
        source.backbone.blocks[0].attn.q.krona_B[0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"blocks\.0\.attn\.q\.krona_B hold NaN or Inf"):
        merge_adapters(source)
