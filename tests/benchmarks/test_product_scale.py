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
            *("--results-md", str(results_md)),
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
            assert row[route]["seconds"] > 0
            assert row[route]["peak_rss_mib"] >= row[route]["rss_before_predict_mib"] > 0
    text = results_md.read_text()
    assert "<!-- product-scale:start -->\n## Products on disk" in text
    assert "| 50x50 (0.0025 Mpx) | int16 | 0.00 | segmentation |" in text
    assert not (tmp_path / "work" / "int16_0.0025").exists()  # products removed after the run
