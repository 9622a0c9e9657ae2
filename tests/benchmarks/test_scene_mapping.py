"""benchmarks/scene_mapping.py end to end in --quick mode: both formulations map every pixel."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from markdown_report import section, tables

REPO_ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(
    r"^\| (classification|segmentation|segmentation, stride 32) \| ([\d,]+) \| "
    r"(\d+)x(\d+)x(\d+) \| (\d+\.\d+) \| "
    r"([\d,]+) \(([\d,]+)-([\d,]+)\) \|$"
)


def number(text: str) -> float:
    return float(text.replace(",", ""))


@pytest.mark.slow
def test_quick_run_times_both_formulations_over_the_whole_scene(shared_data, tmp_path):
    results_md = tmp_path / "results.md"
    results_md.write_text(
        "# Results\n\n<!-- accuracy:start -->\nother section\n<!-- accuracy:end -->\n"
    )
    json_path = tmp_path / "mapping.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.scene_mapping",
            "--quick",
            "--data-root",
            str(shared_data),
            "--results-md",
            str(results_md),
            "--json",
            str(json_path),
            "--extra-inference-strides",
            "32",
            "--batch-sizes",
            "256",
            "512",
            "--tile-batch-sizes",
            "16",
            "32",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]

    rows = [ROW.match(line) for line in result.stdout.splitlines() if line.startswith("| c")]
    rows += [ROW.match(line) for line in result.stdout.splitlines() if line.startswith("| s")]
    labels = ["classification", "segmentation", "segmentation, stride 32"]
    assert [m.group(1) for m in rows if m] == labels, result.stdout
    payload = {r["formulation"]: r for r in json.loads(json_path.read_text())["results"]}
    classification, segmentation, no_overlap = rows
    # One forward sample per pixel; far fewer tiles, each 32x32 with stride 16.
    assert number(classification.group(2)) == 145 * 145
    assert payload["classification"]["forward_samples"] == 145 * 145
    tiles = len(range(0, 145 - 32 + 1, 16)) + 1  # the last tile is flush with the edge
    assert number(segmentation.group(2)) == tiles**2
    assert payload["segmentation"]["inference_stride"] == 16
    # Tiles every 32 pixels: 0, 32, 64, 96 and the last flush with the edge.
    assert number(no_overlap.group(2)) == 5**2
    assert payload["segmentation, stride 32"]["inference_stride"] == 32
    # 12 routed bands for the encoder, then the 200 appended for the spectral path.
    assert [int(segmentation.group(k)) for k in (3, 4, 5)] == [12 + 200, 32, 32]
    for match in rows:
        entry = payload[match.group(1)]
        assert entry["pixels"] == 145 * 145
        median = number(match.group(7))
        assert median > 0
        assert median == pytest.approx(entry["median_pixels_per_second"], abs=0.51)
        rate = entry["median_pixels_per_second"]
        assert rate == pytest.approx(145 * 145 / entry["median_seconds"], rel=1e-9)
        assert number(match.group(8)) <= median <= number(match.group(9))

    # Each speed-up pairs the maps of one round (--quick: one timed round).
    speedups = json.loads(json_path.read_text())["speedup_per_round"]
    seconds = {name: payload[name]["seconds"][0] for name in payload}
    for label in ("segmentation", "segmentation, stride 32"):
        ratio = seconds["classification"] / seconds[label]
        assert speedups[label] == pytest.approx([ratio])

    text = results_md.read_text()
    assert section(text, "accuracy") == "\nother section\n"  # kept as written above
    # The section's table is the printed one, whose values match the JSON (above).
    assert tables(section(text, "scene-mapping")) == tables(result.stdout)
    # Each formulation is timed at the fastest of its swept batch sizes, as the docs say.
    sweep = json.loads(json_path.read_text())["batch_size_sweep_median_seconds"]
    assert {k: sorted(v) for k, v in sweep.items()} == {
        "classification": ["256", "512"],
        "segmentation": ["16", "32"],
    }
    for formulation, medians in sweep.items():
        pick = int(min(medians, key=medians.__getitem__))
        assert payload[formulation]["batch_size"] == pick
    assert payload["segmentation, stride 32"]["batch_size"] == payload["segmentation"]["batch_size"]
