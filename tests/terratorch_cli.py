"""The real ``terratorch`` command, run in a new process as a user runs it (for any test folder).

The process finds the plugin as an installed one does (``terratorch_hsi_peft_autoload``), also
where the test environment predates the ``.pth`` that installs it.

Importable from every test module: pytest puts this folder, the one of the root ``conftest.py``,
on ``sys.path``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

#: The ``terratorch`` entry point of the interpreter running the tests.
TERRATORCH = str(Path(sys.executable).parent / "terratorch")
REPO_ROOT = Path(__file__).resolve().parents[1]
#: Holds a ``sitecustomize`` that installs the plugin's start-up hook as its ``.pth`` does.
SITE = Path(__file__).resolve().parent / "startup"


def terratorch(
    args: list[Any], cwd: Path | None = None, timeout: float = 900, warnings: str = "ignore"
) -> str:
    """Run ``terratorch *args``; return its output, failing the test with its tail on error.

    ``warnings`` is the subprocess's ``PYTHONWARNINGS`` ("default" to see them in the output).
    """
    result = _run(args, cwd, timeout, warnings)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    return output


def terratorch_fails(args: list[Any], cwd: Path | None = None, timeout: float = 900) -> str:
    """Run ``terratorch *args``, which must fail; return its output (stdout, then stderr)."""
    result = _run(args, cwd, timeout, "ignore")
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"terratorch {args} succeeded:\n{output[-6000:]}"
    return output


def _run(
    args: list[Any], cwd: Path | None, timeout: float, warnings: str
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [TERRATORCH, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONWARNINGS": warnings, "PYTHONPATH": _pythonpath()},
    )


def _pythonpath() -> str:
    """The source tree first, with the start-up hook, as an installed plugin would have it."""
    current = os.environ.get("PYTHONPATH", "")
    return os.pathsep.join(p for p in (str(SITE), str(REPO_ROOT), current) if p)
