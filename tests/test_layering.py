"""The package's layers: a module imports only from its own part and from lower layers.

docs/contributing.md draws the same table; a new subpackage must be placed in it. Lazy imports
(inside functions) count too: they hide a cycle, they do not remove it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "terratorch_hsi_peft"

#: Lowest first. Parts of one layer do not import each other.
LAYERS: list[set[str]] = [
    {"utils"},
    {"adapters", "transforms", "products", "metrics", "registry", "terratorch_compat"},
    {"datasets", "backbones"},
    {"pretraining", "models"},
    {"callbacks"},
    {"datamodules"},
    {"export", "configs_gen", "__init__"},
]
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def part_of(path: Path) -> str:
    """The top-level part (subpackage or module) of the package that ``path`` belongs to."""
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imported_parts(path: Path, package: Path = PACKAGE) -> set[str]:
    """The parts of ``package`` that the module at ``path`` imports, anywhere in its code."""
    parts = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level:  # relative: resolve against path
            anchor = path.relative_to(package).parts[: -node.level]
            names = [*anchor, *(node.module or "").split(".")]
            parts.add(names[0] if names and names[0] else path.stem)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = node.module.split(".")
            if names[0] == PACKAGE.name:
                parts.update(names[1:2] or [alias.name for alias in node.names])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                names = alias.name.split(".")
                if names[0] == PACKAGE.name and len(names) > 1:
                    parts.add(names[1])
    return parts


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_part_has_a_layer():
    parts = {part_of(path) for path in modules()}
    assert parts <= set(RANK), f"place {sorted(parts - set(RANK))} in LAYERS (and contributing.md)"
    assert set(RANK) <= parts, f"LAYERS names parts that no longer exist: {set(RANK) - parts}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_only_go_down(path):
    own = part_of(path)
    upward = sorted(
        part for part in imported_parts(path) - {own} if part in RANK and RANK[part] >= RANK[own]
    )
    assert not upward, f"{own} (layer {RANK[own]}) imports {upward} of its own layer or above"


def test_the_check_sees_lazy_and_relative_imports(tmp_path):
    # the test above is only worth something if it sees every form of import
    source = (
        "import terratorch_hsi_peft.models.x\n"
        "from terratorch_hsi_peft.callbacks import y\n"
        "from terratorch_hsi_peft import export\n"
        "def f():\n    from terratorch_hsi_peft.datamodules.base import z\n"
        "from ..backbones import w\n"
    )
    module = tmp_path / PACKAGE.name / "utils" / "probe.py"
    module.parent.mkdir(parents=True)
    module.write_text(source)
    found = imported_parts(module, package=tmp_path / PACKAGE.name)
    assert found == {"models", "callbacks", "export", "datamodules", "backbones"}
