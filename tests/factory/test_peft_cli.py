"""PEFT through the real TerraTorch CLI: the two-line switch, lambda, export, predict, resume.

Runs go through ``terratorch.cli_tools.build_lightning_cli(["fit", ...])`` in this process (a
tiny Prithvi ViT + UNet, a few steps); one subprocess shows that the YAML alone loads the plugin.
"""

from __future__ import annotations

import copy
import errno
import os
import re
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback
from safetensors import safe_open
from safetensors.torch import load_file
from terratorch.cli_tools import build_lightning_cli
from terratorch.models.encoder_decoder_factory import EncoderDecoderFactory
from terratorch_cli import terratorch
from torch.utils.data import DataLoader, Dataset

from terratorch_hsi_peft.adapters import adapter_layers, get_method, method_names
from terratorch_hsi_peft.callbacks import MergeAdaptersForPredict
from terratorch_hsi_peft.export import main as export_main
from terratorch_hsi_peft.models import PEFTEncoderDecoderFactory, load_model_adapters
from terratorch_hsi_peft.utils import download

pytestmark = pytest.mark.slow

LR = 1e-3
LR_RATIO = 16.0
#: Lambda factor: the zero-initialised one (KronA's A by default, LoRA's B), as in LoRA+.
LAMBDA_FACTOR = {"KRONA": "krona_A", "LORA": "lora_B"}


class RecordStart(Callback):
    """Keeps a copy of every parameter, and of the lambda factors, as training starts."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.parameters = {n: p.detach().clone() for n, p in pl_module.named_parameters()}
        self.factors = {
            name: lambda_factor(pl_module.model, name) for name in ("krona_A", "lora_B")
        }


class FixedSegmentationData(pl.LightningDataModule):
    """Four fixed 3x32x32 samples in a fixed order: resumed and straight runs see the same data."""

    def __init__(self, num_samples: int = 4, batch_size: int = 2) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(7)
        self.images = torch.randn(num_samples, 3, 32, 32, generator=generator)
        self.masks = torch.randint(0, 3, (num_samples, 32, 32), generator=generator)
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_Samples(self.images, self.masks), batch_size=self.batch_size)


class _Samples(Dataset):
    def __init__(self, images: torch.Tensor, masks: torch.Tensor) -> None:
        self.images, self.masks = images, masks

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[index], "mask": self.masks[index]}


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def lambda_factor(model: torch.nn.Module, name: str) -> torch.Tensor | None:
    """All adapters' effective ``name`` factor (``lr_ratio * P`` for the "+" methods), flat."""
    layers = [layer for layer in adapter_layers(model).values() if hasattr(layer, name)]
    if not layers:
        return None
    return torch.cat([getattr(layer, name).detach().flatten() for layer in layers])


def stock_config(root: Path, model_args: dict, max_steps: int = 2) -> dict:
    """An ordinary EncoderDecoderFactory config: tiny Prithvi + UNet on DummyDataModule."""
    return {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "max_steps": max_steps,
            "logger": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "num_sanity_val_steps": 0,
            "limit_val_batches": 1,
            "default_root_dir": str(root),
            "callbacks": [{"class_path": class_path(RecordStart)}],
        },
        "data": {
            "class_path": "terratorch.datamodules.dummy_datamodule.DummyDataModule",
            "init_args": {
                "batch_size": 2,
                "num_workers": 0,
                "train_samples": 4,
                "val_samples": 2,
                "test_samples": 2,
                "channels": 3,
                "height": 32,
                "width": 32,
                "segmentation": True,
                "num_classes": 3,
            },
        },
        "model": {
            "class_path": "terratorch.tasks.SemanticSegmentationTask",
            "init_args": {
                "model_factory": "EncoderDecoderFactory",
                "model_args": copy.deepcopy(model_args),
                "loss": "ce",
                "ignore_index": -1,
                "optimizer": "AdamW",
                "lr": LR,
            },
        },
    }


def to_peft(config: dict, peft_config: dict) -> dict:
    """The two-line switch (plus the callback that exports adapters and loads the plugin)."""
    config = copy.deepcopy(config)
    task = config["model"]["init_args"]
    task["model_factory"] = "PEFTEncoderDecoderFactory"
    task["model_args"]["peft_config"] = copy.deepcopy(peft_config)
    adapter_checkpoint = {"class_path": "terratorch_hsi_peft.callbacks.AdapterCheckpoint"}
    config["trainer"]["callbacks"].append(adapter_checkpoint)
    return config


def fit(config: dict, path: Path, *args: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return build_lightning_cli(["fit", "--config", str(path), *args])


def record(cli) -> RecordStart:
    return next(c for c in cli.trainer.callbacks if isinstance(c, RecordStart))


def changed(cli) -> set[str]:
    start = record(cli).parameters
    return {n for n, p in cli.model.named_parameters() if not torch.equal(p, start[n])}


def test_prithvi_yaml_switches_to_krona_export_reload_and_merged_predict(
    tmp_path, prithvi_args, prithvi_peft
):
    stock = stock_config(tmp_path / "stock", prithvi_args)
    stock_cli = fit(stock, tmp_path / "stock.yaml")
    assert any(name.startswith("model.encoder.") for name in changed(stock_cli))

    peft = to_peft(stock, prithvi_peft)
    peft["trainer"]["default_root_dir"] = str(tmp_path / "peft")
    peft["model"]["init_args"]["output_on_inference"] = "logits"  # (logits, "logits") per batch
    cli = fit(peft, tmp_path / "peft.yaml")
    model = cli.model.model
    adapters = {
        f"model.encoder.{layer_name}.{name}"
        for layer_name, layer in adapter_layers(model.encoder).items()
        for name in layer.adapter_parameters()
    }
    outside = {n for n, _ in cli.model.named_parameters() if not n.startswith("model.encoder.")}
    assert len(adapters) == 16
    assert {n.split(".")[1] for n in outside} == {"neck", "decoder", "head"}
    assert changed(cli) == adapters | outside  # and no encoder base weight

    # The run left adapters.safetensors beside its checkpoint and one beside the best checkpoint.
    checkpoint_dir = Path(cli.trainer.checkpoint_callback.dirpath)
    best = Path(cli.trainer.checkpoint_callback.best_model_path)
    assert (checkpoint_dir / "adapters.safetensors").is_file()
    assert best.with_name(best.stem + ".adapters.safetensors").is_file()

    torch.manual_seed(99)  # other init everywhere: the file must carry everything that trained
    fresh = PEFTEncoderDecoderFactory().build_model(
        "segmentation", peft_config=prithvi_peft, **prithvi_args
    )
    trained = {name.removeprefix("model.") for name in adapters | outside}
    fresh.load_state_dict(
        {
            k: v
            for k, v in model.state_dict().items()
            if k.startswith("encoder.") and k not in trained
        },
        strict=False,
    )  # the same pretrained backbone (the adapter file refuses other base weights)
    load_model_adapters(fresh, checkpoint_dir / "adapters.safetensors")
    model.eval(), fresh.eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(fresh(x).output, model(x).output)

    images = [{"image": image} for image in x]
    loader = DataLoader(images, batch_size=2)
    plain = pl.Trainer(logger=False, enable_progress_bar=False, accelerator="cpu")
    unmerged = torch.cat([out[0][0] for out in plain.predict(cli.model, loader)])
    merging = pl.Trainer(
        logger=False,
        enable_progress_bar=False,
        accelerator="cpu",
        callbacks=[MergeAdaptersForPredict()],
    )
    merged = torch.cat([out[0][0] for out in merging.predict(cli.model, loader)])
    assert ((merged - unmerged).norm() / unmerged.norm()).item() < 1e-5
    assert not any(layer.merged for layer in adapter_layers(model).values())  # unmerged after


def test_fit_reports_the_adapters_and_where_their_file_went(
    tmp_path, prithvi_args, prithvi_peft, caplog
):
    """Both lines go to Lightning's logger (on the console of a ``terratorch`` run, see
    tests/e2e/test_terratorch_examples.py; here pytest captures it)."""
    config = to_peft(stock_config(tmp_path / "run", prithvi_args), prithvi_peft)
    cli = fit(config, tmp_path / "peft.yaml")
    text = caplog.text
    adapters = sum(
        p.numel()
        for layer in adapter_layers(cli.model.model.encoder).values()
        for p in layer.adapter_parameters().values()
    )
    trainable = sum(p.numel() for p in cli.model.parameters() if p.requires_grad)
    line = re.search(
        r"PEFT KRONA \(plugin\) on PrithviViT, layers (.*): ([\d,]+) adapter param", text
    )
    assert line, text[-3000:]
    assert line.group(1) == "blocks.*.attn.qkv.q_linear, blocks.*.attn.qkv.v_linear"
    assert int(line.group(2).replace(",", "")) == adapters
    assert f"trainable {trainable:,} (adapters {adapters:,}" in text
    written = Path(cli.trainer.checkpoint_callback.dirpath) / "adapters.safetensors"
    assert f"AdapterCheckpoint: wrote {written} (" in text
    assert "adapters " in text.split(f"wrote {written}")[1].splitlines()[0]


@pytest.mark.parametrize("method", method_names())
def test_every_registered_method_trains_from_yaml_and_writes_its_adapter_file(
    method, tmp_path, prithvi_args, prithvi_peft
):
    prithvi_peft.update(method=method, backend="plugin")
    cli = fit(to_peft(stock_config(tmp_path, prithvi_args), prithvi_peft), tmp_path / "peft.yaml")
    layers = adapter_layers(cli.model.model.encoder)
    assert len(layers) == 8  # q and v of 4 blocks
    assert all(isinstance(layer, get_method(method).layer) for layer in layers.values())
    adapters = {
        f"model.encoder.{layer_name}.{name}"
        for layer_name, layer in layers.items()
        for name in layer.adapter_parameters()
    }
    assert adapters <= changed(cli)  # every adapter tensor trained
    written = Path(cli.trainer.checkpoint_callback.dirpath) / "adapters.safetensors"
    stored = load_file(written)
    assert {f"model.{name}" for name in stored if name.startswith("encoder.")} == adapters
    with safe_open(written, "pt") as f:
        assert f.metadata()["method"] == get_method(method).name


def test_merged_export_loads_in_stock_terratorch_and_predicts_the_same(
    tmp_path, prithvi_args, prithvi_peft
):
    """KronA on Prithvi's split q/v, merged and fused back into qkv by the export command; a new
    interpreter that cannot import the plugin loads it with the stock task and factory."""
    config = to_peft(stock_config(tmp_path / "run", prithvi_args), prithvi_peft)
    cli = fit(config, tmp_path / "peft.yaml")
    checkpoint = Path(cli.trainer.checkpoint_callback.best_model_path)
    merged = tmp_path / "merged.ckpt"
    export_main([str(checkpoint), str(merged)])

    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    torch.save(x, tmp_path / "x.pt")
    model = cli.model.model.eval()
    with torch.no_grad():
        adapted = model(x).output
    code = f"""
import sys, torch
sys.modules["terratorch_hsi_peft"] = None  # any import of the plugin fails
from terratorch.tasks import SemanticSegmentationTask
torch.set_float32_matmul_precision("highest")  # TerraTorch set "medium" (tests/conftest.py)
task = SemanticSegmentationTask.load_from_checkpoint({str(merged)!r}, map_location="cpu")
assert task.hparams.model_factory == "EncoderDecoderFactory"
assert "peft_config" not in task.hparams.model_args
keys = list(task.state_dict())
assert any(k.endswith("blocks.0.attn.qkv.weight") for k in keys), keys
assert not any("q_linear" in k or "krona" in k for k in keys), keys
x = torch.load({str(tmp_path / "x.pt")!r}, weights_only=True)
task.model.eval()
with torch.no_grad():
    torch.save(task.model(x).output, {str(tmp_path / "y.pt")!r})
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TERRATORCH_HSI_PEFT_AUTOLOAD"] = "0"
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=tmp_path, timeout=600)
    stock = torch.load(tmp_path / "y.pt", weights_only=True)
    torch.testing.assert_close(stock, adapted, rtol=1e-4, atol=1e-5)
    assert not torch.equal(adapted, cli_output_without_adapters(cli, x))


def test_export_replaces_an_output_only_when_asked_and_never_leaves_half_a_file(
    tmp_path, prithvi_args, prithvi_peft, monkeypatch, capsys
):
    """A real run: an existing output is kept unless --overwrite; an unwritable folder is named
    with the fix and keeps no temporary file; an unset spectral path (spectral_path: null) is
    dropped, so stock TerraTorch still loads the merged file without the plugin."""
    model_args = {**prithvi_args, "spectral_path": None}
    config = to_peft(stock_config(tmp_path / "run", model_args), prithvi_peft)
    cli = fit(config, tmp_path / "peft.yaml")
    checkpoint = Path(cli.trainer.checkpoint_callback.best_model_path)
    out = tmp_path / "out"
    out.mkdir()
    merged = out / "merged.ckpt"
    merged.write_bytes(b"an earlier export")
    with pytest.raises(SystemExit):
        export_main([str(checkpoint), str(merged)])
    assert "exists. Pass --overwrite" in capsys.readouterr().err
    assert merged.read_bytes() == b"an earlier export"

    # A read-only folder. Root (as these tests may run) ignores permission bits, so there the
    # temporary file's creation fails as it does for any other user: EACCES from mkstemp.
    out.chmod(0o555)
    if os.geteuid() == 0:

        def refused(*args, **kwargs):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(out))

        monkeypatch.setattr(download.tempfile, "mkstemp", refused)
    try:
        with pytest.raises(SystemExit) as exit_info:
            export_main([str(checkpoint), str(merged), "--overwrite"])
    finally:
        out.chmod(0o755)
        monkeypatch.undo()
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and "Traceback" not in err
    assert f"Cannot write {merged}: Permission denied. Nothing was written" in err
    assert "a folder you can write to" in err
    assert merged.read_bytes() == b"an earlier export"
    assert [p.name for p in out.iterdir()] == ["merged.ckpt"]  # no temporary file left

    export_main([str(checkpoint), str(merged), "--overwrite"])
    assert "Merged checkpoint written to" in capsys.readouterr().out
    assert [p.name for p in out.iterdir()] == ["merged.ckpt"]
    code = f"""
import sys
sys.modules["terratorch_hsi_peft"] = None  # any import of the plugin fails
from terratorch.tasks import SemanticSegmentationTask
task = SemanticSegmentationTask.load_from_checkpoint({str(merged)!r}, map_location="cpu")
assert not any(k.startswith("spectral_path") for k in task.hparams.model_args)
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TERRATORCH_HSI_PEFT_AUTOLOAD"] = "0"
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=tmp_path, timeout=600)


def cli_output_without_adapters(cli, x: torch.Tensor) -> torch.Tensor:
    """The trained model's output with every adapter switched off (the adapters changed it)."""
    layers = adapter_layers(cli.model.model).values()
    scalings = [layer.scaling for layer in layers]
    for layer in layers:
        layer.scaling = 0.0
    try:
        with torch.no_grad():
            return cli.model.model(x).output
    finally:
        for layer, scaling in zip(layers, scalings, strict=True):
            layer.scaling = scaling


def test_freeze_backbone_true_still_trains_adapters(tmp_path, prithvi_args, prithvi_peft):
    config = to_peft(stock_config(tmp_path, prithvi_args), prithvi_peft)
    config["model"]["init_args"]["freeze_backbone"] = True
    cli = fit(config, tmp_path / "frozen.yaml")
    encoder_changed = {n for n in changed(cli) if n.startswith("model.encoder.")}
    assert len(encoder_changed) == 16
    assert all(".krona_" in n for n in encoder_changed)


def test_dotted_command_line_overrides_of_model_args_are_typed(tmp_path, prithvi_args):
    # jsonargparse passes these into the untyped model_args dict as strings ("false" is truthy:
    # Prithvi would try to download weights); flow collections arrive parsed. (num_classes is
    # read by the stock task itself, before any factory, so it cannot be fixed here.)
    config = to_peft(stock_config(tmp_path, prithvi_args), {"method": "KRONA"})
    overrides = {
        "backbone_pretrained": "false",
        "backbone_depth": "4",
        "head_dropout": "0.5",
        "peft_config": "{method: LORA, replace_qkv: qkv, "
        "peft_config_kwargs: {target_modules: [q_linear, v_linear], r: 2}}",
    }
    args = [a for k, v in overrides.items() for a in (f"--model.init_args.model_args.{k}", v)]
    cli = fit(config, tmp_path / "cli.yaml", *args)
    model = cli.model.model
    layers = adapter_layers(model)
    assert len(layers) == 8 and all(type(x).__name__ == "LoRALinear" for x in layers.values())
    assert {layer.lora_A.shape[0] for layer in layers.values()} == {2}
    assert model.head.head[1].p == 0.5 and model.head.head[-1].out_channels == 3
    assert {n.split(".")[-1] for n in changed(cli) if n.startswith("model.encoder.")} == {
        "lora_A",
        "lora_B",
    }


def test_cli_strings_reach_the_factory_typed_once(tmp_path, prithvi_args, monkeypatch):
    # issue 33: the factory's arguments are read as YAML once, where model_args enter, so what
    # the factory hands on is typed: "null" is no peft_config (full fine-tuning), "0.5" a float,
    # "[1,2]" a list, "true" a bool.
    seen = {}
    original = EncoderDecoderFactory.build_model

    def spy(self, task, backbone, decoder, **kwargs):
        seen.update(kwargs)
        kwargs.pop("ignored_flag"), kwargs.pop("ignored_list")  # only to be seen here
        return original(self, task, backbone, decoder, **kwargs)

    monkeypatch.setattr(EncoderDecoderFactory, "build_model", spy)
    config = stock_config(tmp_path, prithvi_args, max_steps=1)
    config["model"]["init_args"]["model_factory"] = "PEFTEncoderDecoderFactory"
    overrides = {
        "peft_config": "null",
        "head_dropout": "0.5",
        "ignored_list": "[1,2]",
        "ignored_flag": "true",
    }
    args = [a for k, v in overrides.items() for a in (f"--model.init_args.model_args.{k}", v)]
    cli = fit(config, tmp_path / "typed.yaml", *args)
    assert seen["ignored_flag"] is True and type(seen["head_dropout"]) is float
    assert seen["head_dropout"] == 0.5 and seen["ignored_list"] == [1, 2]
    # "null" (handed over as "None") is no peft_config: the full fine-tuning branch, which passes
    # no peft_config on, not a method file named "None".
    assert "peft_config" not in seen and not adapter_layers(cli.model.model)


#: Optimizers of the lambda test: (torch.optim class, hyperparameters, steps).
OPTIMIZERS = {
    "AdamW": ("AdamW", {}, 1),
    "SGD": ("SGD", {}, 2),
    "SGD_momentum": ("SGD", {"momentum": 0.9}, 2),
}


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("optimizer_setup", ["task", "lightning_cli"])
@pytest.mark.parametrize("method", ["KRONA", "LORA"])
def test_lambda_moves_the_factor_lr_ratio_times_as_far(
    tmp_path, prithvi_args, method, optimizer_setup, optimizer
):
    """The same steps from the same seed: Delta(factor) under "+" / under plain = lr_ratio.

    Under SGD the "+" factor moved lr_ratio**2 as far before the plugin matched its gradient to
    the optimizer built; momentum shows over the second step.
    """
    factor = LAMBDA_FACTOR[method]
    name, hparams, steps = OPTIMIZERS[optimizer]
    displacement = {}
    for variant in (method, f"{method}_PLUS"):
        kwargs = {"target_modules": ["q_linear", "v_linear"]}
        if variant.endswith("_PLUS"):
            kwargs["lr_ratio"] = LR_RATIO
        peft_config = {"method": variant, "replace_qkv": "qkv", "peft_config_kwargs": kwargs}
        config = to_peft(stock_config(tmp_path / variant, prithvi_args, steps), peft_config)
        config["trainer"].update(limit_val_batches=0, enable_checkpointing=False)
        config["trainer"]["callbacks"] = [{"class_path": class_path(RecordStart)}]
        task = config["model"]["init_args"]
        if optimizer_setup == "task":  # task-level optimizer, lr and lr_overrides
            task.update(
                optimizer=name, optimizer_hparams=hparams, lr_overrides={"decoder": 10 * LR}
            )
        else:  # LightningCLI's optimizer block replaces the task's parameter groups
            init_args = {"lr": LR, **hparams}
            config["optimizer"] = {"class_path": f"torch.optim.{name}", "init_args": init_args}
        cli = fit(config, tmp_path / f"{variant}.yaml")
        start = record(cli).factors[factor]
        displacement[variant] = lambda_factor(cli.model.model, factor) - start
    plain, plus = displacement[method], displacement[f"{method}_PLUS"]
    if name == "AdamW":  # Adam's first step moves every element by about lr
        assert plain.abs().mean().item() == pytest.approx(LR, rel=0.05)
    assert plain.norm() > 0
    ratio = (plus.norm() / plain.norm()).item()
    # Tolerance 2%: Adam's eps; under SGD the second step's gradients differ slightly.
    assert ratio == pytest.approx(LR_RATIO, rel=0.02)


def test_resumed_run_reaches_the_uninterrupted_adapters_and_optimizer_state(
    tmp_path, prithvi_args, prithvi_peft
):
    peft_config = {**prithvi_peft, "method": "KRONA_PLUS"}

    def config(name: str, max_epochs: int) -> dict:
        base = to_peft(stock_config(tmp_path / name, prithvi_args), peft_config)
        base["data"] = {"class_path": class_path(FixedSegmentationData)}
        base["trainer"].update(
            max_steps=-1,
            max_epochs=max_epochs,  # 2 steps per epoch
            limit_val_batches=0,
            deterministic=True,
        )
        checkpoint = {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {"dirpath": str(tmp_path / name / "ckpt"), "save_last": True},
        }
        base["trainer"]["callbacks"].append(checkpoint)
        return base

    fit(config("straight", 2), tmp_path / "straight.yaml")
    fit(config("resumed", 1), tmp_path / "first.yaml")
    last = tmp_path / "resumed" / "ckpt" / "last.ckpt"
    first_half = load_file(tmp_path / "resumed" / "ckpt" / "adapters.safetensors")
    fit(config("resumed", 2), tmp_path / "second.yaml", "--ckpt_path", str(last))

    straight = load_file(tmp_path / "straight" / "ckpt" / "adapters.safetensors")
    resumed = load_file(tmp_path / "resumed" / "ckpt" / "adapters.safetensors")
    assert straight.keys() == resumed.keys()
    adapter_keys = [k for k in straight if k.startswith("encoder.")]
    assert len(adapter_keys) == 16
    assert any(not torch.equal(resumed[k], first_half[k]) for k in adapter_keys)
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=1e-6)

    states = [
        torch.load(tmp_path / name / "ckpt" / "last.ckpt", weights_only=True)
        for name in ("straight", "resumed")
    ]
    assert states[0]["global_step"] == states[1]["global_step"] == 4
    optimizer_states = [s["optimizer_states"][0]["state"] for s in states]
    assert optimizer_states[0].keys() == optimizer_states[1].keys()
    for index, state in optimizer_states[0].items():
        for name, value in state.items():
            torch.testing.assert_close(optimizer_states[1][index][name], value, rtol=0, atol=1e-6)


def test_a_fresh_terratorch_process_finds_the_plugin_from_the_yaml(
    tmp_path, prithvi_args, prithvi_peft
):
    config = to_peft(stock_config(tmp_path, prithvi_args), prithvi_peft)
    config["trainer"]["callbacks"] = config["trainer"]["callbacks"][1:]  # only AdapterCheckpoint
    path = tmp_path / "peft.yaml"
    path.write_text(yaml.safe_dump(config))
    terratorch(["fit", "--config", path], timeout=300)
    assert list(tmp_path.rglob("adapters.safetensors"))


def test_bf16_true_adapters_load_into_float32_and_check_base_comes_from_yaml(
    tmp_path, prithvi_args, prithvi_peft
):
    # issue 31 item 1: adapters trained with precision: bf16-true could never be loaded back
    # (the base fingerprint was taken on rounded weights); check_base was Python-only
    config = to_peft(stock_config(tmp_path / "fit", prithvi_args), prithvi_peft)
    config["trainer"].update(limit_val_batches=0, enable_checkpointing=False)
    config["trainer"]["precision"] = "bf16-true"
    fit(config, tmp_path / "fit.yaml")
    adapters = tmp_path / "fit" / "adapters.safetensors"
    with safe_open(adapters, framework="pt") as f:
        assert f.get_tensor(f.keys()[0]).dtype == torch.bfloat16  # written from the bf16 model
    reload = copy.deepcopy(config)
    reload["model"]["init_args"]["model_args"]["peft_config"]["adapter_path"] = str(adapters)
    reload["trainer"]["callbacks"] = []
    for precision in ("32-true", "bf16-true"):  # the same base in float32, and in bfloat16
        reload["trainer"]["precision"] = precision
        (tmp_path / "test.yaml").write_text(yaml.safe_dump(reload))
        cli = build_lightning_cli(["test", "--config", str(tmp_path / "test.yaml")])
        assert cli.trainer.state.finished
    reload["seed_everything"] = 1  # another random base: refused, unless check_base: false
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(reload))
    with pytest.raises(ValueError, match=r"peft_config: \{check_base: false\} in YAML"):
        build_lightning_cli(["test", "--config", str(tmp_path / "test.yaml")])
    reload["model"]["init_args"]["model_args"]["peft_config"]["check_base"] = False
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(reload))
    cli = build_lightning_cli(["test", "--config", str(tmp_path / "test.yaml")])
    assert cli.trainer.state.finished


def test_a_run_resumed_under_another_seed_records_the_origin_of_its_weights(
    tmp_path, prithvi_args, prithvi_peft
):
    # issue 31 item 2: resuming under another seed_everything recorded the new seed as the
    # base's origin, although the weights are restored from the checkpoint (seed 0)
    config = to_peft(stock_config(tmp_path, prithvi_args), prithvi_peft)
    config["data"] = {"class_path": class_path(FixedSegmentationData)}
    config["trainer"].update(max_steps=-1, max_epochs=1, limit_val_batches=0)
    checkpoint = {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {"dirpath": str(tmp_path / "ckpt"), "save_last": True},
    }
    config["trainer"]["callbacks"].append(checkpoint)
    fit(config, tmp_path / "first.yaml")
    adapters = tmp_path / "ckpt" / "adapters.safetensors"
    origin = "prithvi_eo_tiny, random init, seed 0"
    with safe_open(adapters, framework="pt") as f:
        assert f.metadata()["base_weights_origin"] == origin
    resumed = {**copy.deepcopy(config), "seed_everything": 1}
    resumed["trainer"]["max_epochs"] = 2
    last = str(tmp_path / "ckpt" / "last.ckpt")
    cli = fit(resumed, tmp_path / "resumed.yaml", "--ckpt_path", last)
    assert cli.trainer.current_epoch == 2  # it did resume and train on
    assert cli.model.model.weights_origin == origin
    with safe_open(adapters, framework="pt") as f:
        assert f.metadata()["base_weights_origin"] == origin
    # and the file loads onto the base it names (seed 0), not the one the resume was built with
    reload = copy.deepcopy(config)
    reload["model"]["init_args"]["model_args"]["peft_config"]["adapter_path"] = str(adapters)
    reload["trainer"]["callbacks"] = []
    reload["data"] = stock_config(tmp_path, prithvi_args)["data"]  # one with a test split
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(reload))
    cli = build_lightning_cli(["test", "--config", str(tmp_path / "test.yaml")])
    assert cli.trainer.state.finished


def test_adapter_path_onto_another_random_base_is_refused_on_the_cli(
    tmp_path, prithvi_args, prithvi_peft
):
    # issue 13 item 3 through the CLI: adapters of a random backbone (seed 0) reloaded into
    # another random backbone (seed 1) without a word, giving other predictions
    config = to_peft(stock_config(tmp_path / "fit", prithvi_args), prithvi_peft)
    config["trainer"].update(limit_val_batches=0, enable_checkpointing=False)
    fit(config, tmp_path / "fit.yaml")
    adapters = tmp_path / "fit" / "adapters.safetensors"
    with safe_open(adapters, framework="pt") as f:
        assert f.metadata()["base_weights_origin"] == "prithvi_eo_tiny, random init, seed 0"
    reload = copy.deepcopy(config)
    reload["model"]["init_args"]["model_args"]["peft_config"]["adapter_path"] = str(adapters)
    reload["trainer"]["callbacks"] = []
    for seed in (1, 0):
        reload["seed_everything"] = seed
        (tmp_path / "test.yaml").write_text(yaml.safe_dump(reload))
        if seed == 1:
            with pytest.raises(ValueError) as caught:
                build_lightning_cli(["test", "--config", str(tmp_path / "test.yaml")])
            message = str(caught.value)
            assert (
                "was trained on other base weights: the file expects prithvi_eo_tiny, " in message
            )
            assert "random init, seed 0 (fingerprint" in message
            assert "this model has prithvi_eo_tiny, random init, seed 1" in message
        else:  # the same seed rebuilds the same base: the adapters load and test runs
            cli = build_lightning_cli(["test", "--config", str(tmp_path / "test.yaml")])
            assert cli.trainer.state.finished
