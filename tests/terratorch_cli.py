"""The real ``terratorch`` command, run in a new process as a user runs it (for any test folder).

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


def terratorch(args: list[Any], cwd: Path | None = None, timeout: float = 900) -> str:
    """Run ``terratorch *args``; return its output, failing the test with its tail on error."""
    result = subprocess.run(
        [TERRATORCH, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    return output
