"""``python -m terratorch_hsi_peft.export``: never replaces the run, never overwrites unasked,
and says what is wrong with its input or output instead of a traceback (issue 31).

The export needs a PEFT run's checkpoint only once the paths and the file's content pass these
checks, so files made here stand in for runs; ``test_peft_cli.py`` exports real runs.
"""

from __future__ import annotations

import copy
import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from terratorch_hsi_peft.export import export_merged_checkpoint, main

REPO_ROOT = Path(__file__).resolve().parents[2]


class Payload:
    """An arbitrary Python object: a file holding one is not weights."""


def fake_run(path: Path, model_args: dict | None = None) -> Path:
    """A small checkpoint laid out like a PEFT run's (weights, optimizer state, hparams)."""
    torch.save(
        {
            "state_dict": {"model.encoder.weight": torch.arange(1000.0)},
            "optimizer_states": [{"state": {}, "param_groups": []}],
            "hyper_parameters": {
                "model_factory": "PEFTEncoderDecoderFactory",
                "model_args": model_args or {"backbone": "x", "peft_config": {"method": "KRONA"}},
                "_class_path": "terratorch.tasks.SemanticSegmentationTask",
            },
        },
        path,
    )
    return path


def export(capsys, *argv: str | Path) -> str:
    """Run the command's ``main``; it must exit with status 1. Returns its error message."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(arg) for arg in argv])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("python -m terratorch_hsi_peft.export: error: "), err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


def assert_nothing_written(folder: Path, expected: set[str]) -> None:
    """Only the files the test made are there: no output, no temporary file left behind."""
    assert {p.name for p in folder.iterdir()} == expected


@pytest.mark.parametrize("spelling", ["same", "other spelling", "symlink", "hard link"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_the_runs_checkpoint_is_never_the_output(tmp_path, capsys, spelling, overwrite):
    run = fake_run(tmp_path / "run.ckpt")
    before = run.read_bytes()
    output = {
        "same": run,
        "other spelling": tmp_path / "sub" / ".." / "." / "run.ckpt",
        "symlink": tmp_path / "link.ckpt",
        "hard link": tmp_path / "hard.ckpt",
    }[spelling]
    (tmp_path / "sub").mkdir()
    if spelling == "symlink":
        output.symlink_to(run)
    elif spelling == "hard link":
        os.link(run, output)
    err = export(capsys, run, output, *(["--overwrite"] if overwrite else []))
    assert f"The output {output} is the run's checkpoint {run}" in err
    assert "Give another output file" in err
    assert run.read_bytes() == before
    assert_nothing_written(tmp_path, {"run.ckpt", "sub", output.name})


def test_an_existing_output_is_kept_without_overwrite(tmp_path, capsys):
    run = fake_run(tmp_path / "run.ckpt")
    output = tmp_path / "merged.ckpt"
    output.write_bytes(b"an earlier export")
    err = export(capsys, run, output)
    assert f"The output {output} exists. Pass --overwrite" in err
    assert output.read_bytes() == b"an earlier export"
    with pytest.raises(ValueError, match="overwrite=True"):
        export_merged_checkpoint(run, output)
    assert_nothing_written(tmp_path, {"run.ckpt", "merged.ckpt"})


def test_a_folder_as_output_is_refused(tmp_path, capsys):
    run = fake_run(tmp_path / "run.ckpt")
    (tmp_path / "out").mkdir()
    err = export(capsys, run, tmp_path / "out", "--overwrite")
    assert f"The output {tmp_path / 'out'} is a folder" in err
    assert f"for example {tmp_path / 'out' / 'merged.ckpt'}" in err
    assert_nothing_written(tmp_path / "out", set())


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        pytest.param(
            lambda path: None,
            "{path} does not exist. Give the path of the run's .ckpt",
            id="missing",
        ),
        pytest.param(
            lambda path: path.mkdir(),
            "{path} is a folder. Give the path of the run's .ckpt file",
            id="folder",
        ),
        pytest.param(
            lambda path: path.write_bytes(b""),
            "Cannot read checkpoint {path}: the file is empty",
            id="empty",
        ),
        pytest.param(
            lambda path: path.write_bytes(fake_run(path).read_bytes()[:3000]),
            "Cannot read checkpoint {path}: it is not a PyTorch checkpoint or is truncated/corrupt",
            id="truncated",
        ),
        pytest.param(
            lambda path: torch.save({"state_dict": {}, "payload": Payload()}, path),
            "Cannot read checkpoint {path}: it holds Python objects/code (test_export_cli.Payload) "
            "and will not be loaded for safety",
            id="pickled objects",
        ),
        pytest.param(
            lambda path: torch.save(torch.zeros(3), path),
            "{path} holds a Tensor, not a Lightning checkpoint",
            id="bare tensor",
        ),
    ],
)
def test_a_bad_input_is_named_with_the_fix(tmp_path, capsys, make, expected):
    run = tmp_path / "run.ckpt"
    make(run)
    err = export(capsys, run, tmp_path / "merged.ckpt")
    assert expected.format(path=run) in err
    assert not (tmp_path / "merged.ckpt").exists()
    if "Cannot read" in expected:
        assert "Give the .ckpt that `terratorch fit` wrote for the run" in err
        assert "weights_only=False" not in err  # never the advice to unpickle anything


def test_an_input_that_cannot_be_opened_is_named(tmp_path, capsys, monkeypatch):
    """A checkpoint the user may not read. Root (as these tests may run) reads any file, so
    torch.load fails here as it does for another user: PermissionError."""
    run = fake_run(tmp_path / "run.ckpt")

    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(run))

    monkeypatch.setattr(torch, "load", refused)
    err = export(capsys, run, tmp_path / "merged.ckpt")
    assert f"Cannot read checkpoint {run}: Permission denied. Give a .ckpt you can read." in err
    assert_nothing_written(tmp_path, {"run.ckpt"})


def test_a_run_with_a_spectral_path_is_refused_up_front(tmp_path, capsys):
    """The shipped segmentation config's model (spectral path on 200 bands): stock TerraTorch
    could not load the merged file, so the export says so and writes nothing."""
    config = yaml.safe_load((REPO_ROOT / "configs/indian_pines/segmentation.yaml").read_text())
    model_args = copy.deepcopy(config["model"]["init_args"]["model_args"])
    model_args.setdefault("peft_config", {"method": "KRONA_PLUS"})
    assert model_args["spectral_path"]["width"] == 64
    run = fake_run(tmp_path / "run.ckpt", model_args)
    err = export(capsys, run, tmp_path / "merged.ckpt")
    path = "{'width': 64, 'bands': 200, 'loss': True, 'window': 5}"
    assert f"{run} is a run with a spectral path (model_args.spectral_path: {path})" in err
    assert "EncoderDecoderFactory cannot build" in err
    assert f"--ckpt_path {run}), adding the callback" in err
    assert "terratorch_hsi_peft.callbacks.MergeAdaptersForPredict" in err
    assert_nothing_written(tmp_path, {"run.ckpt"})


def test_the_real_command_exits_non_zero_with_one_line(tmp_path):
    run = fake_run(tmp_path / "run.ckpt")
    before = run.read_bytes()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "terratorch_hsi_peft.export", str(run), str(run), "--overwrite"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("python -m terratorch_hsi_peft.export: error: The output ")
    assert "is the run's checkpoint" in result.stderr and "Traceback" not in result.stderr
    assert run.read_bytes() == before
