"""``make gpu-check``: everything that needs a CUDA device, in one command with one summary.

1. ``cuda tests``: the tests marked ``cuda`` (``pytest -m cuda``); passed when they ran and none
   failed or was skipped.
2. ``terratorch fit``: the shipped KronA+ classification experiment of ``configs/manifest.yaml``
   on the real Indian Pines scene, with ``--trainer.accelerator gpu --trainer.precision
   bf16-mixed``, a few training steps and validation batches, random initial weights (the
   released ones would be downloaded; this checks the GPU path, not accuracy); passed when it
   exits 0 and writes its ``last.ckpt``.
3. ``efficiency benchmark``: ``python -m benchmarks.efficiency --device cuda --quick``.

Each check runs in its own process, its output in ``<workdir>/<check>.log``; the summary gives
each check's result and seconds, and the exit status is 0 only when every check passed. Without
a CUDA device nothing runs: the script says so and exits with status 2.

Usage::

    python .ci/gpu_check.py [--data <folder holding indian_pines/>] [--workdir <folder>]
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
MANIFEST = REPO_ROOT / "configs" / "manifest.yaml"
#: The experiment the fit check runs (a key of configs/manifest.yaml).
EXPERIMENT = "indian_pines/classification/krona_plus"
#: What the shell does with "$(cat FILE)" in a manifest command: pass the file's contents.
_CAT = re.compile(r"\$\(cat (\S+)\)")
#: Exit status without a CUDA device (distinct from a failed check's 1).
NO_CUDA = 2


@dataclass
class Result:
    """One check's outcome for the summary."""

    name: str
    passed: bool
    seconds: float
    detail: str


def experiments() -> dict[str, str]:
    """Every experiment's command by name, as configs/manifest.yaml states them: each task of its
    ``finetuning`` block with ``full`` and with each method file of configs/methods/ (composed by
    the block's rules), then the listed ``experiments``."""
    manifest = yaml.safe_load(MANIFEST.read_text())
    commands = {}
    rules = manifest.get("finetuning")
    if rules is not None:
        methods = sorted(path.stem for path in (REPO_ROOT / "configs" / "methods").glob("*.yaml"))
        for task, command in rules["tasks"].items():
            for method in ["full", *methods]:
                choice = rules["full"] if method == "full" else rules["method"]
                output = rules["output"].replace("<task>", task)
                composed = " ".join((command, choice, output)).replace("<method>", method)
                commands[f"{task}/{method}"] = composed
    commands.update({name: entry["command"] for name, entry in manifest["experiments"].items()})
    return commands


def manifest_command(experiment: str = EXPERIMENT) -> list[str]:
    """The arguments after ``terratorch`` of the experiment's command in the manifest, as the
    shell passes them (``"$(cat FILE)"`` becomes the file's contents), ``--config`` files
    absolute (the check runs in its own folder, where the relative output paths then land)."""
    commands = experiments()
    if experiment not in commands:
        raise SystemExit(
            f"{MANIFEST} has no experiment {experiment!r}; pick one of {sorted(commands)}."
        )
    argv = shlex.split(commands[experiment])
    if argv[:2] != ["terratorch", "fit"]:
        raise SystemExit(f"{experiment}: the manifest command must start 'terratorch fit'.")
    args = [
        (REPO_ROOT / cat[1]).read_text() if (cat := _CAT.fullmatch(arg)) else arg
        for arg in argv[1:]
    ]
    for i, flag in enumerate(args[:-1]):
        if flag in ("--config", "-c"):
            args[i + 1] = str(REPO_ROOT / args[i + 1])
    return args


def fit_args(data: Path, steps: int, experiment: str = EXPERIMENT) -> list[str]:
    """The arguments after ``terratorch`` of the fit check: the manifest's command on the GPU in
    bf16-mixed, ``steps`` training batches and two validation batches, offline."""
    return [
        *manifest_command(experiment),
        "--data.init_args.root",
        str(data / "indian_pines"),
        "--trainer.accelerator",
        "gpu",
        "--trainer.devices",
        "1",
        "--trainer.precision",
        "bf16-mixed",
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        str(steps),
        "--trainer.limit_val_batches",
        "2",
        "--trainer.enable_progress_bar",
        "false",
        "--model.init_args.model_args.backbone_pretrained",
        "false",
    ]


def terratorch_executable() -> str:
    """The ``terratorch`` entry point next to this interpreter, else the one on PATH."""
    beside = Path(sys.executable).parent / "terratorch"
    found = str(beside) if beside.is_file() else shutil.which("terratorch")
    if found is None:
        raise SystemExit("No terratorch command found; install the package (make setup).")
    return found


def junit_outcome(report: Path) -> tuple[bool, str]:
    """Whether a pytest JUnit report shows tests that ran with none failed or skipped."""
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    ran = counts["tests"] - counts["skipped"]
    bad = counts["failures"] + counts["errors"]
    detail = f"{ran - bad} passed, {bad} failed, {counts['skipped']} skipped"
    return counts["tests"] > 0 and bad == 0 and counts["skipped"] == 0, detail


def summary(results: list[Result]) -> str:
    """The results as one Markdown table (check, result, seconds, detail)."""
    rows = ["| check | result | seconds | detail |", "|---|---|---:|---|"]
    rows += [
        f"| {r.name} | {'passed' if r.passed else 'FAILED'} | {r.seconds:.0f} | {r.detail} |"
        for r in results
    ]
    return "\n".join(rows)


def _run(
    name: str, command: list[str], log: Path, cwd: Path, timeout: float, data: Path
) -> tuple[bool, str]:
    """Run ``command`` with its output in ``log``; (exit status 0, a note when it was not)."""
    print(f"== {name}: {shlex.join(command)}", flush=True)
    env = {**os.environ, "HSI_SHARED_DATA": str(data)}  # the tests read the scenes from there
    with log.open("w") as out:
        try:
            done = subprocess.run(
                command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            return False, f"timed out after {timeout:.0f} s, see {log}"
    if done.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-30:]
        print("\n".join(tail), file=sys.stderr)
        return False, f"exit status {done.returncode}, see {log}"
    return True, ""


def _checks(args: argparse.Namespace, workdir: Path) -> list[Result]:
    results = []

    def timed(name: str, check) -> None:
        start = time.monotonic()
        try:
            passed, detail = check()
        except (Exception, SystemExit) as error:  # one broken check still leaves the summary
            passed, detail = False, f"{type(error).__name__}: {error}"
        results.append(Result(name, passed, time.monotonic() - start, detail))

    def cuda_tests() -> tuple[bool, str]:
        report = workdir / "cuda-tests.xml"
        command = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", f"--junitxml={report}"]
        passed, note = _run(
            "cuda tests", command, workdir / "cuda-tests.log", REPO_ROOT, 600, args.data
        )
        if not report.is_file():
            return False, note or "pytest wrote no report"
        counted, detail = junit_outcome(report)
        return passed and counted, detail if passed else f"{detail}; {note}"

    def fit() -> tuple[bool, str]:
        folder = workdir / "fit"
        folder.mkdir()
        command = [terratorch_executable(), *fit_args(args.data, args.steps)]
        passed, note = _run("terratorch fit", command, workdir / "fit.log", folder, 600, args.data)
        if not passed:
            return False, note
        written = sorted(folder.rglob("last.ckpt"))
        if not written:
            return False, f"no last.ckpt under {folder}"
        return True, f"{EXPERIMENT}, {args.steps} steps, bf16-mixed"

    def efficiency() -> tuple[bool, str]:
        command = [
            sys.executable,
            "-m",
            "benchmarks.efficiency",
            "--device",
            "cuda",
            "--quick",
            "--json",
            str(workdir / "efficiency.json"),
        ]
        passed, note = _run(
            "efficiency", command, workdir / "efficiency.log", REPO_ROOT, 600, args.data
        )
        return passed, note or f"results in {workdir / 'efficiency.json'}"

    timed("cuda tests", cuda_tests)
    timed("terratorch fit", fit)
    timed("efficiency benchmark", efficiency)
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the checks; return the exit status (0: all passed, 1: a check failed, 2: no CUDA)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("HSI_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")),
        help="folder holding indian_pines/ (default: $HSI_SHARED_DATA, else ../shared/data)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="where the run's new folder of logs and outputs is made (default: the temp folder)",
    )
    parser.add_argument("--steps", type=_positive, default=20, help="training batches of the fit")
    args = parser.parse_args(argv)

    import torch  # after the arguments: --help needs no torch

    if not torch.cuda.is_available():
        print(
            "gpu-check: no CUDA device is available (torch.cuda.is_available() is False), so "
            "nothing was checked. Run it on a machine with an NVIDIA GPU and a CUDA build of "
            "torch.",
            file=sys.stderr,
        )
        return NO_CUDA
    if not (args.data / "indian_pines").is_dir():
        print(
            f"gpu-check: {args.data / 'indian_pines'} does not exist; point --data (or "
            "HSI_SHARED_DATA) at the folder holding indian_pines/.",
            file=sys.stderr,
        )
        return 1
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    # a new folder each run: an earlier run's last.ckpt cannot pass for this one's
    workdir = Path(tempfile.mkdtemp(prefix="gpu-check-", dir=args.workdir)).resolve()
    print(f"gpu-check on {torch.cuda.get_device_name(0)}; logs in {workdir}", flush=True)
    results = _checks(args, workdir)
    print(summary(results))
    return 0 if all(r.passed for r in results) else 1


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


if __name__ == "__main__":
    sys.exit(main())
