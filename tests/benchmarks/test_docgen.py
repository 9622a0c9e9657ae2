"""benchmarks/docgen: the generators rewrite only their own section of a docs page."""

from __future__ import annotations

from pathlib import Path

from benchmarks.docgen import methods
from terratorch_hsi_peft.adapters.registry import methods_markdown


def section(path: Path, name: str) -> str:
    text = path.read_text()
    start, end = f"<!-- {name}:start -->\n", f"\n<!-- {name}:end -->"
    assert start in text and end in text, f"{path} has no {name} section"
    return text.split(start, 1)[1].split(end, 1)[0]


def test_methods_generator_rewrites_only_its_section(tmp_path):
    page = tmp_path / "configuration.md"
    page.write_text("# Config\n\n<!-- methods:start -->\nold\n<!-- methods:end -->\n\nafter\n")
    methods.main([str(page)])
    text = page.read_text()
    assert "old" not in text and text.endswith("<!-- methods:end -->\n\nafter\n")
    assert section(page, methods.SECTION) == f"{methods.HEADING}\n\n{methods_markdown()}"


def test_methods_generator_writes_the_page_the_docs_show():
    """The heading the generator writes is the one docs/configuration.md carries."""
    docs = section(methods.PAGE, methods.SECTION)
    assert docs.split("\n\n", 1)[0] == methods.HEADING
    assert Path(__file__).resolve().parents[2] / "docs" / "configuration.md" == methods.PAGE
