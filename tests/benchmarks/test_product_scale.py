"""benchmarks/product_scale.py end to end on a tiny product: both routes, both formulations."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from markdown_report import section

from benchmarks.experiments import build_model, load_experiment
from benchmarks.product_scale import (
    BANDS,
    ENCODER,
    EXPERIMENTS,
    PRODUCT_CONFIG,
    SHAPE_KEYS,
    _order,
    count_parameters,
    disk_datamodule,
    experiment_config,
    markdown_table,
    round_ratios,
)
from terratorch_hsi_peft.callbacks import GeoTiffMapWriter
from terratorch_hsi_peft.datamodules import ProductMapDataModule

REPO_ROOT = Path(__file__).resolve().parents[2]
RUNS = REPO_ROOT / "benchmarks" / "results" / "product_scale.json"


@pytest.mark.slow
def test_tiny_run_maps_from_disk_and_in_memory_and_writes_the_table(tmp_path):
    results_md = tmp_path / "results.md"
    json_path = tmp_path / "scale.json"
    result = subprocess.run(
        [
            sys.executable,
            *("-m", "benchmarks.product_scale"),
            *("--sizes", "0.0025", "--dtypes", "int16", "--block-size", "32", "--rounds", "2"),
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
        # Two paired rounds, the second in the other order; the median round's runs on top.
        assert [list(runs) for runs in row["rounds"]] == [["disk", "memory"], ["memory", "disk"]]
        assert any(runs["disk"] == row["disk"] for runs in row["rounds"])
        assert all(min(round_ratios(runs)) > 0 for runs in row["rounds"])
        assert row["disk"]["block_size"] == 32
        for route in ("disk", "memory"):
            assert row[route]["pixels"] == 50 * 50
            assert row[route]["seconds"] > 0 and row[route]["cpu_seconds"] > 0
            assert row[route]["peak_rss_mib"] >= row[route]["rss_before_predict_mib"] > 0
            assert len(row[route]["load"]) == 2  # the machine's load around the map
            # Peak from the child's own VmHWM (ru_maxrss would start at this pytest's peak).
            assert row[route]["ru_maxrss_mib"] > 0
            # What was timed: the shipped experiment, its size, the threads and the environment.
            assert row[route]["experiment"] == EXPERIMENTS[row["formulation"]]
            model = build_model(experiment_config(row["formulation"]))
            assert row[route]["parameters"] == count_parameters(model)
            assert row[route]["torch_threads"] >= 1
            assert isinstance(row[route]["environment"], dict)
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


def test_the_models_are_the_shipped_experiments_with_the_listed_overrides():
    """Only the encoder size (segmentation), the random weights and the path's band count
    differ from the shipped files; everything else (decoder, necks, head) is theirs."""
    args = ("model", "init_args", "model_args")
    for formulation, name in EXPERIMENTS.items():
        shipped, used = load_experiment(name), experiment_config(formulation)
        assert used["data"] == shipped["data"] and used["trainer"] == shipped["trainer"]
        before, after = (_dig(c, args) for c in (shipped, used))
        changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
        expected = {"backbone_pretrained"}
        if formulation == "segmentation":
            expected |= {f"backbone_{k}" for k in ENCODER}
            assert {k: after[f"backbone_{k}"] for k in ENCODER} == ENCODER
        if "spectral_path" in before:
            expected.add("spectral_path")
            assert after["spectral_path"] == {**before["spectral_path"], "bands": BANDS}
        assert changed <= expected, changed - expected
        assert after["backbone_pretrained"] is False


def test_the_quickstart_encoder_is_the_segmentation_encoder():
    quickstart = _dig(load_experiment("quickstart"), ("model", "init_args", "model_args"))
    assert {k: quickstart[f"backbone_{k}"] for k in ENCODER} == ENCODER


def test_disk_datamodule_and_writer_come_from_the_product_config(tmp_path):
    product = yaml.safe_load((REPO_ROOT / PRODUCT_CONFIG).read_text())
    for formulation in EXPERIMENTS:
        config = experiment_config(formulation)
        spec = {
            "product": "flight.hdr",
            "formulation": formulation,
            "block_size": 64,
            "batch_size": 5,
            "out": tmp_path,
        }
        dm, (writer,) = disk_datamodule(config, spec)
        assert isinstance(dm, ProductMapDataModule) and isinstance(writer, GeoTiffMapWriter)
        assert (dm.product_path, dm.formulation, dm.block_size, dm.batch_size) == (
            "flight.hdr",
            formulation,
            64,
            5,
        )
        assert dm.reader_options == product["data"]["init_args"]["reader_options"]
        data = config["data"]["init_args"]
        for key in SHAPE_KEYS[formulation]:
            assert getattr(dm, key) == data[key]
        assert writer.output_dir == str(tmp_path)
        assert (
            writer.probabilities == product["trainer"]["callbacks"][0]["init_args"]["probabilities"]
        )


def test_the_docs_table_and_plot_are_the_stored_runs():
    """docs/results.md's "Products on disk" table is the one rendered from the stored runs, and
    every stored run timed the model the shipped files build today."""
    rows = json.loads(RUNS.read_text())
    body = section((REPO_ROOT / "docs" / "results.md").read_text(), "product-scale")
    assert markdown_table(sorted(rows, key=_order)) in body
    assert "![Pixels/s and peak RSS against scene size](img/product_scale.png)" in body
    assert (REPO_ROOT / "docs" / "img" / "product_scale.png").is_file()
    for formulation in {row["formulation"] for row in rows}:
        parameters = count_parameters(build_model(experiment_config(formulation)))
        for row in rows:
            if row["formulation"] == formulation:
                for route in ("disk", "memory"):
                    if route in row:
                        assert row[route]["parameters"] == parameters, (row["mpx"], route)


def _dig(config: dict, keys: tuple[str, ...]) -> dict:
    for key in keys:
        config = config[key]
    return config


def test_the_figures_against_the_targets_are_the_stored_runs():
    """The peaks, floors and rates quoted under "Against the targets" come from the stored runs
    (so that a rerun that changes them fails here until the text follows)."""
    rows = json.loads(RUNS.read_text())
    text = (REPO_ROOT / "docs" / "results.md").read_text()
    start = text.index("**Against the targets.**")
    targets = text[start : text.index("**Where the memory goes.**", start)]

    def seg(dtype: str) -> list[dict]:
        found = [r for r in rows if r["formulation"] == "segmentation" and r["dtype"] == dtype]
        return sorted(found, key=lambda r: r["mpx"])

    def listing(values: list[float], unit: str = "") -> str:
        items = [f"{v:,.0f}" for v in values]
        return ", ".join(items[:-1]) + f" and {items[-1]}{unit}"

    for dtype in ("int16", "float32"):
        runs = seg(dtype)
        assert [r["mpx"] for r in runs] == [0.25, 1, 4, 16]
        peaks = [max(rr["disk"]["peak_rss_mib"] for rr in r.get("rounds") or [r]) for r in runs]
        assert f"{listing(peaks, ' MiB')} ({dtype})" in targets
    int16 = seg("int16")
    rates = [r["disk"]["pixels"] / r["disk"]["seconds"] for r in int16]
    assert listing(rates) in targets
    classification = {
        r["disk"]["block_size"]: r
        for r in rows
        if r["formulation"] == "classification" and r["mpx"] == 1
    }
    assert set(classification) == {176, 512}
    for block, run in classification.items():
        assert f"{run['disk']['peak_rss_mib']:,.0f} MiB" in targets, block
