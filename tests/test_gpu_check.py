"""``make gpu-check`` (.ci/gpu_check.py), as far as it can be checked without a GPU."""

from __future__ import annotations

import importlib.util
import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from terratorch_cli import terratorch

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / ".ci" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("gpu_check")


def test_without_cuda_it_says_so_runs_nothing_and_fails():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # hides a GPU where there is one
    done = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "gpu-check: no CUDA device is available" in done.stderr
    assert "nothing was checked" in done.stderr
    assert done.stdout == ""  # no check started


def test_the_makefile_target_runs_the_script():
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "\ngpu-check: $(STAMP)\n\t$(BIN)/python .ci/gpu_check.py" in makefile
    assert "gpu-check" in makefile.split(".PHONY:")[1].splitlines()[0]


@pytest.mark.slow
def test_fit_command_is_the_shipped_experiment_on_the_gpu_and_parses(gpu_check, tmp_path):
    """The manifest's KronA+ command with the GPU overrides, parsed by the real CLI on the CPU."""
    args = gpu_check.fit_args(tmp_path, steps=3)
    shipped = gpu_check.manifest_command()
    assert args[: len(shipped)] == shipped and shipped[0] == "fit"
    configs = [Path(v) for f, v in itertools.pairwise(shipped) if f == "--config"]
    assert configs and all(p.is_absolute() and p.is_file() for p in configs)
    printed = yaml.safe_load(terratorch([*args, "--print_config"], cwd=tmp_path))
    trainer = printed["trainer"]
    assert (trainer["accelerator"], trainer["precision"]) == ("gpu", "bf16-mixed")
    assert (trainer["max_epochs"], trainer["limit_train_batches"]) == (1, 3)
    assert printed["data"]["init_args"]["root"] == str(tmp_path / "indian_pines")
    model_args = printed["model"]["init_args"]["model_args"]
    assert model_args["peft_config"]["method"] == "KRONA_PLUS"
    assert model_args["backbone_pretrained"] in (False, "false")  # no download on the GPU host
    assert printed["model"]["init_args"]["model_factory"] == "PEFTEncoderDecoderFactory"


def test_composed_experiments_follow_the_manifest_rules(gpu_check, monkeypatch, tmp_path):
    """A task x method experiment is the task's command, the method rule (the method file's
    contents, as the shell's "$(cat FILE)" passes them) and the output rule."""
    (tmp_path / "configs" / "methods").mkdir(parents=True)
    (tmp_path / "configs" / "methods" / "krona_plus.yaml").write_text("method: KRONA_PLUS\n")
    manifest = tmp_path / "configs" / "manifest.yaml"
    peft_flag = "--model.init_args.model_args.peft_config"
    rules = {
        "tasks": {"ip/classification": "terratorch fit --config configs/ip.yaml"},
        "full": "--config configs/full.yaml",
        "method": f'{peft_flag} "$(cat configs/methods/<method>.yaml)"',
        "output": "--trainer.default_root_dir outputs/<task>/<method>",
    }
    quickstart = {"command": "terratorch fit --config configs/quickstart.yaml"}
    manifest.write_text(
        yaml.safe_dump({"finetuning": rules, "experiments": {"quickstart": quickstart}})
    )
    monkeypatch.setattr(gpu_check, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(gpu_check, "MANIFEST", manifest)
    assert sorted(gpu_check.experiments()) == [
        "ip/classification/full",
        "ip/classification/krona_plus",
        "quickstart",
    ]
    assert gpu_check.manifest_command("ip/classification/krona_plus") == [
        "fit",
        "--config",
        str(tmp_path / "configs" / "ip.yaml"),
        peft_flag,
        "method: KRONA_PLUS\n",
        "--trainer.default_root_dir",
        "outputs/ip/classification/krona_plus",
    ]


def test_an_unknown_experiment_names_the_listed_ones(gpu_check):
    with pytest.raises(SystemExit, match=r"has no experiment 'nope'; pick one of \[.*krona_plus"):
        gpu_check.manifest_command("nope")


@pytest.mark.parametrize(
    ("counts", "passed", "detail"),
    [
        ({"tests": 5}, True, "5 passed, 0 failed, 0 skipped"),
        ({"tests": 5, "skipped": 1}, False, "4 passed, 0 failed, 1 skipped"),
        ({"tests": 5, "failures": 1, "errors": 1}, False, "3 passed, 2 failed, 0 skipped"),
        ({"tests": 0}, False, "0 passed, 0 failed, 0 skipped"),
    ],
)
def test_cuda_tests_pass_only_when_they_ran_and_none_failed_or_skipped(
    gpu_check, tmp_path, counts, passed, detail
):
    attributes = " ".join(f'{k}="{v}"' for k, v in counts.items())
    report = tmp_path / "report.xml"
    report.write_text(f'<testsuites><testsuite name="pytest" {attributes}/></testsuites>')
    assert gpu_check.junit_outcome(report) == (passed, detail)


def test_summary_is_one_table_with_result_and_seconds(gpu_check):
    results = [
        gpu_check.Result("cuda tests", True, 41.6, "7 passed, 0 failed, 0 skipped"),
        gpu_check.Result("terratorch fit", False, 12.2, "exit status 1, see fit.log"),
    ]
    assert gpu_check.summary(results).splitlines() == [
        "| check | result | seconds | detail |",
        "|---|---|---:|---|",
        "| cuda tests | passed | 42 | 7 passed, 0 failed, 0 skipped |",
        "| terratorch fit | FAILED | 12 | exit status 1, see fit.log |",
    ]


def test_every_check_runs_and_one_failure_fails_the_whole(gpu_check, monkeypatch, tmp_path, capsys):
    """main's route with CUDA pretended and the processes replaced: the summary lists all three
    checks, the failed fit among them, and the exit status is 1."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda _: "a pretended GPU")
    (tmp_path / "data" / "indian_pines").mkdir(parents=True)
    commands = []

    def run(name, command, log, cwd, timeout, data):
        commands.append(command)
        if name == "cuda tests":
            report = next(a.split("=", 1)[1] for a in command if a.startswith("--junitxml="))
            Path(report).write_text('<testsuites><testsuite tests="7"/></testsuites>')
        return name != "terratorch fit", "exit status 1" if name == "terratorch fit" else ""

    monkeypatch.setattr(gpu_check, "_run", run)
    status = gpu_check.main(["--data", str(tmp_path / "data"), "--workdir", str(tmp_path / "w")])
    table = capsys.readouterr().out.splitlines()[-3:]
    assert status == 1
    assert [row.split(" | ")[:2] for row in table] == [
        ["| cuda tests", "passed"],
        ["| terratorch fit", "FAILED"],
        ["| efficiency benchmark", "passed"],
    ]
    assert commands[0][1:6] == ["-m", "pytest", "-q", "-m", "cuda"]
    assert commands[1][1:] == gpu_check.fit_args(tmp_path / "data", steps=20)
    assert commands[2][1:3] == ["-m", "benchmarks.efficiency"]  # run from the repository root
    assert commands[2][3:7] == ["--device", "cuda", "--quick", "--json"]
