"""The start-up hook that imports the plugin once TerraTorch has finished importing.

Fast tests: fresh interpreters without ``site`` (``-S``: no ``.pth`` of the test environment runs)
that install the hook by hand, as the shipped ``.pth`` does, and import stand-ins for ``terratorch``
and the plugin that record the order of events. The installed wheel is tested in
``tests/test_wheel_install.py``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

FAKE_TERRATORCH = """
from events import EVENTS
EVENTS.append("terratorch starts")
import terratorch.sub  # TerraTorch imports its own submodules while it initialises
EVENTS.append("terratorch done")
DONE = True
"""
FAKE_PLUGIN = """
import terratorch
from events import EVENTS
EVENTS.append(f"plugin imported, terratorch done={terratorch.DONE}")
"""


@pytest.fixture
def fakes(tmp_path: Path) -> Path:
    """A folder with stand-ins: ``terratorch`` (a package) and ``terratorch_hsi_peft``."""
    (tmp_path / "terratorch").mkdir()
    (tmp_path / "terratorch" / "__init__.py").write_text(FAKE_TERRATORCH)
    (tmp_path / "terratorch" / "sub.py").write_text("")
    (tmp_path / "terratorch_hsi_peft").mkdir()
    (tmp_path / "terratorch_hsi_peft" / "__init__.py").write_text(FAKE_PLUGIN)
    (tmp_path / "events.py").write_text("EVENTS = []\n")
    return tmp_path


def run(code: str, path: Path, env: dict[str, str] | None = None) -> str:
    """Run ``code`` after installing the hook as the .pth does; return stdout."""
    pth = (REPO_ROOT / "terratorch_hsi_peft_autoload.pth").read_text().strip()
    script = f"import sys; sys.path[:0] = [{str(path)!r}, {str(REPO_ROOT)!r}]\n{pth}\n"
    result = subprocess.run(
        [sys.executable, "-S", "-c", script + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_plugin_is_imported_once_terratorch_has_finished(fakes: Path):
    out = run(
        """
        import events, terratorch
        print(events.EVENTS)
        loader = terratorch.__spec__.loader
        print(type(loader).__name__, terratorch.__loader__ is loader)
        print([type(f).__name__ for f in sys.meta_path].count("AutoloadFinder"))
        """,
        fakes,
    )
    events, loader, finders = out.splitlines()
    assert events == str(
        ["terratorch starts", "terratorch done", "plugin imported, terratorch done=True"]
    )
    assert loader == "SourceFileLoader True"  # TerraTorch's own loader is back in its spec
    assert finders == "0"  # one-shot: the finder is gone once TerraTorch is imported


def test_python_m_terratorch_imports_the_plugin(fakes: Path):
    """``python -m terratorch`` (runpy) looks up the package's spec before importing it."""
    (fakes / "terratorch" / "__main__.py").write_text("from events import EVENTS\nprint(EVENTS)\n")
    out = run("import runpy; runpy.run_module('terratorch', run_name='__main__')", fakes)
    assert out.strip() == str(
        ["terratorch starts", "terratorch done", "plugin imported, terratorch done=True"]
    )


def test_importing_the_plugin_first_works(fakes: Path):
    out = run("import events, terratorch_hsi_peft; print(events.EVENTS)", fakes)
    assert out.strip() == str(
        ["terratorch starts", "terratorch done", "plugin imported, terratorch done=True"]
    )


def test_nothing_is_imported_without_terratorch(fakes: Path):
    out = run(
        """
        import json, importlib
        print(sorted(m for m in sys.modules if m.startswith(("terratorch", "torch"))))
        """,
        fakes,
    )
    assert out.strip() == "['terratorch_hsi_peft_autoload']"


@pytest.mark.parametrize("value", ["0", "false", "off"])
def test_environment_variable_switches_it_off(fakes: Path, value: str):
    code = "import events, terratorch; print(events.EVENTS)"
    out = run(code, fakes, env={"TERRATORCH_HSI_PEFT_AUTOLOAD": value})
    assert out.strip() == str(["terratorch starts", "terratorch done"])


def test_switching_off_in_process_before_terratorch_is_imported(fakes: Path):
    out = run(
        """
        import os
        os.environ["TERRATORCH_HSI_PEFT_AUTOLOAD"] = "0"
        import events, terratorch
        print(events.EVENTS)
        """,
        fakes,
    )
    assert out.strip() == str(["terratorch starts", "terratorch done"])


def test_a_broken_plugin_warns_and_terratorch_still_imports(fakes: Path):
    (fakes / "terratorch_hsi_peft" / "__init__.py").write_text("raise ImportError('boom')\n")
    out = run(
        """
        import warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import terratorch
        print(terratorch.DONE, "terratorch_hsi_peft" in sys.modules)
        print(caught[0].message)
        """,
        fakes,
    )
    status, message = out.splitlines()
    assert status == "True False"
    assert "ImportError: boom" in message
    assert "TERRATORCH_HSI_PEFT_AUTOLOAD=0" in message
