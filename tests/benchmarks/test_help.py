"""Every study and docs generator runs as ``python -m benchmarks.<name> --help`` from the root.

All modules run in one subprocess through ``runpy`` (what ``python -m`` runs), from the repository
root without PYTHONPATH, as in a clean clone: importing a study imports TerraTorch, seconds each,
so one interpreter keeps the check to one import.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO_ROOT / "benchmarks"


def runnable_modules() -> list[str]:
    """``benchmarks.x`` for every module of the package with a ``__main__`` block."""
    modules = []
    for path in sorted(BENCHMARKS.rglob("*.py")):
        if 'if __name__ == "__main__":' in path.read_text():
            parts = path.relative_to(REPO_ROOT).with_suffix("").parts
            modules.append(".".join(parts))
    return modules


MODULES = runnable_modules()

HELP_ALL = """
import contextlib, io, json, runpy, sys
out = {}
for name in sys.argv[1:]:
    sys.argv = [name, "--help"]
    buffer = io.StringIO()
    code = "returned without exiting"  # --help must exit; a module that returns ignored it
    with contextlib.redirect_stdout(buffer):
        try:
            runpy.run_module(name, run_name="__main__", alter_sys=True)
        except SystemExit as stop:
            code = stop.code
    out[name] = {"code": code, "stdout": buffer.getvalue()}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def helps() -> dict[str, dict]:
    """``{module: {"code", "stdout"}}`` of ``--help``; ``-c`` puts the root first on the path."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", HELP_ALL, *MODULES],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_the_studies_are_found():
    assert {"benchmarks.protocol", "benchmarks.efficiency", "benchmarks.docgen.methods"} <= set(
        MODULES
    )


@pytest.mark.parametrize("module", MODULES)
def test_help_exits_0_with_the_usage(helps, module):
    assert helps[module]["code"] == 0, helps[module]
    usage = helps[module]["stdout"].splitlines()[0]
    assert usage.startswith("usage: ") and "-h" in usage, usage


def test_no_core_test_imports_a_study():
    """Only tests/benchmarks/ imports the studies; other tests at most the docs generators."""
    study_import = re.compile(
        r"^\s*(?:from benchmarks(?!\.docgen\b)[\w.]* import|import benchmarks(?!\.docgen\b))",
        re.MULTILINE,
    )
    tests = REPO_ROOT / "tests"
    offenders = [
        path.relative_to(REPO_ROOT).as_posix()
        for path in sorted(tests.rglob("*.py"))
        if "benchmarks" not in path.relative_to(tests).parts[:-1]
        and study_import.search(path.read_text())
    ]
    assert offenders == []
    assert study_import.search("from benchmarks import protocol")
    assert not study_import.search("from benchmarks.docgen import figures")
