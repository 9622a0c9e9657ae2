"""benchmarks/product_scale.py end to end on a tiny product: both routes, both formulations."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_tiny_run_maps_from_disk_and_in_memory_and_writes_the_table(tmp_path):
    results_md = tmp_path / "results.md"
    json_path = tmp_path / "scale.json"
    result = subprocess.run(
        [
            sys.executable,
            *("-m", "benchmarks.product_scale"),
            *("--sizes", "0.0025", "--dtypes", "int16", "--block-size", "32"),
            *("--workdir", str(tmp_path / "work"), "--json", str(json_path)),
            *("--results-md", str(results_md), "--plot", str(tmp_path / "img" / "scale.png")),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    rows = json.loads(json_path.read_text())
    assert [r["formulation"] for r in rows] == ["segmentation", "classification"]
    for row in rows:
        for route in ("disk", "memory"):
            assert row[route]["pixels"] == 50 * 50
            assert row[route]["seconds"] > 0 and row[route]["cpu_seconds"] > 0
            assert row[route]["peak_rss_mib"] >= row[route]["rss_before_predict_mib"] > 0
            assert len(row[route]["load"]) == 2  # the machine's load around the map
            # Peak from the child's own VmHWM (ru_maxrss would start at this pytest's peak).
            assert row[route]["ru_maxrss_mib"] > 0
        assert row["command"].startswith("python -m benchmarks.product_scale --sizes 0.0025")
    text = results_md.read_text()
    assert "<!-- product-scale:start -->\n## Products on disk" in text
    assert "| 50x50 (0.0025 Mpx) | int16 | 0.00 | segmentation |" in text
    assert not (tmp_path / "work" / "int16_0.0025").exists()  # products removed after the run
    assert (tmp_path / "img" / "scale.png").read_bytes().startswith(b"\x89PNG")
    assert "![Pixels/s and peak RSS against scene size](img/scale.png)" in text
    assert f"`{rows[0]['command']}`" in text

    # The table and plot again from the JSON (of several runs): same rows, both commands named.
    results_md.unlink()
    rendered = subprocess.run(
        [
            sys.executable,
            *("-m", "benchmarks.product_scale", "--from-json", str(json_path)),
            *("--results-md", str(results_md), "--plot", str(tmp_path / "again.png")),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert rendered.returncode == 0, rendered.stderr[-4000:]
    again = results_md.read_text()
    assert f"`{rows[0]['command']}`" in again
    assert "--from-json" in again
    assert "| 50x50 (0.0025 Mpx) | int16 | 0.00 | segmentation |" in again
    assert (tmp_path / "again.png").is_file()


def test_the_batch_of_eight_figures_in_the_docs_are_the_stored_runs():
    """docs/results.md quotes each stored 8-tile run's peak RSS and the floor before predict."""
    runs = json.loads((REPO_ROOT / "benchmarks/results/product_scale_batch8.json").read_text())
    text = (REPO_ROOT / "docs" / "results.md").read_text()
    paragraph = text[text.index("Not flat in scene size.") :].split("\n\n")[0]
    assert {run["disk"]["batch_size"] for run in runs} == {8}
    for run in runs:
        assert f"{run['disk']['peak_rss_mib']:,.0f} MiB" in paragraph, run["mpx"]
        assert f"{run['disk']['rss_before_predict_mib']:,.0f} MiB" in paragraph
    default = sorted((r["mpx"], r["disk"]["peak_rss_mib"]) for r in runs if "environment" not in r)
    per_mpx = (default[-1][1] - default[0][1]) / (default[-1][0] - default[0][0])
    assert f"about {round(per_mpx)} MiB more per Mpx" in paragraph
