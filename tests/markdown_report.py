"""Read the values of a generated Markdown report, so tests compare numbers, not its sentences.

A study writes its section of ``docs/*.md`` between ``<!-- name:start -->`` and
``<!-- name:end -->``; its tables and image links are the values a test checks against the
study's runs or JSON files. Importable from every test module (pytest puts this folder on
``sys.path``).
"""

from __future__ import annotations

import re

__all__ = ["image_links", "number", "section", "tables"]

_IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")
_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?")


def section(text: str, name: str) -> str:
    """The body of the one section ``name`` of ``text`` (between its start and end markers)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    assert text.count(start) == text.count(end) == 1, f"not exactly one section {name!r}"
    return text[text.index(start) + len(start) : text.index(end)]


def tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Each Markdown table of ``text`` as (header cells, body rows of cells), in order."""
    found, block = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append([cell.strip() for cell in line.strip().strip("|").split("|")])
            continue
        if block:
            assert len(block) >= 2 and set("".join(block[1])) <= set("-:"), block[:2]
            found.append((block[0], block[2:]))
            block = []
    return found


def number(cell: str) -> float:
    """The first number of a cell (``21,025`` -> 21025.0, ``85.3 ± 0.2`` -> 85.3)."""
    match = _NUMBER.search(cell)
    assert match is not None, f"no number in {cell!r}"
    return float(match.group().replace(",", ""))


def image_links(text: str) -> list[str]:
    """The targets of the Markdown images of ``text`` (``![...](img/x.png)`` -> ``img/x.png``)."""
    return _IMAGE.findall(text)
