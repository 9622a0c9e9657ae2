"""Every relative link and image in README.md and docs/ points at a file that exists.

``mkdocs build --strict`` catches these too, but only in CI's docs step; this keeps a
regenerated results section with a wrong image path from reaching main through ``make test``.
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
# [text](target) and ![alt](target); the target ends at whitespace or the closing parenthesis.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)[^)]*\)")
# A runs file named in prose, and the commit that holds it when it has left the tree.
RUNS_FILE = re.compile(r"`(benchmarks/results/[\w.-]+\.jsonl)`(?: at commit ([0-9a-f]{7,40}))?")


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


def _cited_runs_files() -> list[tuple[str, str, str | None]]:
    """(page, file, commit or None) for every runs file the pages name, line breaks ignored."""
    cited = []
    for page in PAGES:
        text = " ".join(page.read_text().split())
        for m in RUNS_FILE.finditer(text):
            cited.append((page.name, m.group(1), m.group(2)))
    return cited


def _full_history() -> bool:
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        return False
    command = ["git", "rev-parse", "--is-shallow-repository"]
    shallow = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    return shallow.returncode == 0 and shallow.stdout.strip() == "false"


def test_cited_runs_files_are_in_the_tree_or_at_their_commit():
    """benchmarks/results/ keeps one current file per study; the others are cited by commit."""
    cited = _cited_runs_files()
    assert cited, "the pattern no longer sees the citations"
    for page, path, commit in cited:
        if commit is None:
            assert (REPO_ROOT / path).is_file(), f"{page}: {path} is gone; cite 'at commit <sha>'"
            continue
        assert not (REPO_ROOT / path).is_file(), f"{page}: {path} is in the tree; drop the commit"
        if not _full_history():
            continue  # an unpacked archive or a shallow clone: no history to look in
        done = subprocess.run(
            ["git", "cat-file", "-e", f"{commit}:{path}"], cwd=REPO_ROOT, capture_output=True
        )
        assert done.returncode == 0, f"{page}: commit {commit} holds no {path}"
