"""Every relative link and image in README.md and docs/ points at a file that exists.

``mkdocs build --strict`` catches these too, but only in CI's docs step; this keeps a
regenerated results section with a wrong image path from reaching main through ``make test``.
"""

import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
# [text](target) and ![alt](target); the target ends at whitespace or the closing parenthesis.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)[^)]*\)")


def _relative_targets(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)  # code blocks aren't links
    targets = [m.group(1) for m in LINK.finditer(text)]
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:|^#", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_relative_links_resolve(page):
    missing = []
    for target in _relative_targets(page):
        path = target.split("#", 1)[0]
        if not (page.parent / path).exists():
            missing.append(target)
    assert not missing, f"{page.name} links to files that do not exist: {missing}"


def test_the_link_pattern_sees_images_and_links():
    page = "![plot](img/a.png) [cfg](../configs/x.yaml) [web](https://x.org) [top](#top)"
    assert [m.group(1) for m in LINK.finditer(page)] == [
        "img/a.png",
        "../configs/x.yaml",
        "https://x.org",
        "#top",
    ]
