"""The one Markdown file every benchmark reports into: each owns a section between markers."""

from __future__ import annotations

import re
from pathlib import Path

from terratorch_hsi_peft.utils.download import atomic_write

__all__ = ["update_markdown_section"]


def update_markdown_section(path: Path, name: str, heading: str, body: str) -> None:
    """Replace the section between ``<!-- name:start -->`` and ``<!-- name:end -->`` of ``path``.

    A missing file is created with a ``# Results`` title; a missing section is appended. The rest
    of the file is left untouched and the file is written atomically.
    """
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    section = f"{start}\n{heading}\n\n{body.strip()}\n{end}"
    text = path.read_text() if path.is_file() else "# Results\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), flags=re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as f:
        f.write(text)
