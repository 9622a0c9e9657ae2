"""benchmarks/accuracy.py end to end in --quick mode: the table, the JSON, the plots, the docs."""

from __future__ import annotations

import argparse
import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from markdown_report import image_links, section, tables
from sklearn.metrics import accuracy_score, cohen_kappa_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from terratorch_hsi_peft.backbones import SpectralGPTEncoder
from terratorch_hsi_peft.datasets import IndianPines, make_split

REPO_ROOT = Path(__file__).resolve().parents[2]
METHODS = ["FULL", "LORA", "LORA_PLUS", "KRONA", "KRONA_PLUS", "LOKR"]
CELL = re.compile(r"^(-?\d+\.\d) ± (\d+\.\d)$")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_script(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.accuracy", "--quick", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def table_rows(stdout: str) -> tuple[list[str], list[list[str]]]:
    """Header and body rows of the Markdown table printed on stdout."""
    lines = [line for line in stdout.splitlines() if line.startswith("|")]
    split = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    assert set(lines[1]) <= set("|-"), "second table line must be the separator"
    return split[0], split[2:]


@pytest.mark.slow
def test_quick_grid_prints_every_method_and_writes_plots_json_and_docs(shared_data, tmp_path):
    results_md = tmp_path / "results.md"
    results_md.write_text("# Results\n\n## Efficiency\n\nkept as it is\n")
    json_path = tmp_path / "accuracy.json"
    runs_path = tmp_path / "runs.jsonl"
    result = run_script(
        "--data-root",
        str(shared_data),
        "--results-md",
        str(results_md),
        "--json",
        str(json_path),
        "--runs",
        str(runs_path),
    )

    header, rows = table_rows(result.stdout)
    assert header[:3] == ["Formulation", "Method", "Trainable params"]
    assert header[3] == "per-class 10% OA" and header[6] == "spatially disjoint OA"
    payload = json.loads(json_path.read_text())
    assert payload["seg_methods"] == METHODS
    assert [(r[0], r[1]) for r in rows] == [
        *[("classification", m) for m in METHODS],
        ("spectral", "SVM_RBF"),
        ("spectral", "RANDOM_FOREST"),
        *[("segmentation", m) for m in METHODS],
    ]
    summary = {(s["formulation"], s["method"]): s for s in payload["summary"]}
    for row in rows:
        entry = summary[row[0], row[1]]
        for column, (split, score) in enumerate(
            (s, k) for s in ("per_class", "spatially_disjoint") for k in ("oa", "aa", "kappa")
        ):
            mean, std = CELL.match(row[3 + column]).groups()
            low = -100.0 if score == "kappa" else 0.0
            assert low <= float(mean) <= 100.0 and float(std) == 0.0  # one seed in --quick
            assert float(mean) == pytest.approx(entry["splits"][split][score]["mean"], abs=0.051)

    # The grid: both splits, one seed, every method in both formulations, two baselines.
    runs = payload["runs"]
    assert len(runs) == 2 * (2 * len(METHODS) + 2)
    # Every run was appended to --runs as it finished; a rerun trains nothing and reports them.
    stored = [json.loads(line) for line in runs_path.read_text().splitlines()]
    assert sorted(map(json.dumps, stored)) == sorted(map(json.dumps, runs))
    before = runs_path.read_text()
    again = run_script("--data-root", str(shared_data), "--runs", str(runs_path))
    assert table_rows(again.stdout) == (header, rows)
    assert runs_path.read_text() == before  # nothing was trained again
    report = run_script("--data-root", str(shared_data), "--runs", str(runs_path), "--report-only")
    assert table_rows(report.stdout) == (header, rows)
    by_key = {(r["formulation"], r["method"], r["split"]): r for r in runs}
    # Each formulation's default schedule, recorded per run.
    assert {r["schedule"] for r in runs if r["formulation"] == "classification"} == {"constant"}
    assert {r["schedule"] for r in runs if r["formulation"] == "segmentation"} == {"cosine"}
    seg_full = by_key["segmentation", "FULL", "per_class"]
    assert (
        seg_full["trainable_total"]
        > by_key["segmentation", "KRONA", "per_class"]["trainable_total"]
    )
    full = by_key["classification", "FULL", "per_class"]
    assert full["trainable_encoder"] > 0 and full["checkpoint_tensors"] == 0
    for method in METHODS[1:]:  # adapters train far fewer encoder parameters than FULL
        adapted = by_key["classification", method, "per_class"]
        assert 0 < adapted["trainable_encoder"] < full["trainable_encoder"] / 2
    # Both splits draw the same training pixels for every method and baseline.
    for split in ("per_class", "spatially_disjoint"):
        counts = {r["train_pixels"] for r in runs if r["split"] == split}
        assert len(counts) == 1
    per_class_train = by_key["spectral", "SVM_RBF", "per_class"]["train_pixels"]
    assert per_class_train == pytest.approx(0.1 * 10249, rel=0.02)

    # The SVM row against an independent scikit-learn computation on the same split.
    svm = by_key["spectral", "SVM_RBF", "per_class"]
    scene = IndianPines(shared_data / "indian_pines")
    split = make_split(scene.labels, "per_class", 0, train_size=0.1)
    spectra = scene.image.reshape(-1, scene.num_bands)
    classes = scene.labels.reshape(-1) - 1
    test = split.test[: svm["test_pixels"]]
    model = make_pipeline(StandardScaler(), SVC(C=100.0, gamma="scale"))
    predicted = model.fit(spectra[split.train], classes[split.train]).predict(spectra[test])
    assert svm["oa"] == pytest.approx(100 * accuracy_score(classes[test], predicted), abs=1e-6)
    kappa = 100 * cohen_kappa_score(classes[test], predicted)
    assert svm["kappa"] == pytest.approx(kappa, abs=1e-6)

    for name in ("accuracy_vs_params.png", "class_maps.png"):
        image = tmp_path / "img" / name
        assert image.read_bytes()[:8] == PNG_MAGIC and image.stat().st_size > 5000
    text = results_md.read_text()
    assert "## Efficiency\n\nkept as it is" in text  # the other section, as written above
    body = section(text, "accuracy")
    assert tables(body) == [(header, rows)]  # the printed table, checked against the JSON above
    links = image_links(body)
    assert sorted(links) == ["img/accuracy_vs_params.png", "img/class_maps.png"]
    assert all((results_md.parent / link).is_file() for link in links)


def write_official_checkpoint(path: Path, embed_dim: int, depth: int) -> int:
    """A checkpoint as the official training script writes it; returns its encoder tensor count."""
    encoder = SpectralGPTEncoder(
        num_bands=12, img_size=128, embed_dim=embed_dim, depth=depth, num_heads=2
    )
    weights = {key: torch.randn_like(value) for key, value in encoder.state_dict().items()}
    mae_only = {
        "mask_token": torch.zeros(1, 1, 8),
        "decoder_embed.weight": torch.ones(8, embed_dim),
    }
    torch.save(
        {
            "model": {**weights, **mae_only},
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]},
            "epoch": 199,
            "args": argparse.Namespace(model="mae_vit_base_patch8_128", input_size=128),
        },
        path,
    )
    return len(weights)


@pytest.mark.slow
def test_ckpt_path_loads_official_layout_weights_into_every_model(shared_data, tmp_path):
    checkpoint = tmp_path / "SpectralGPT+.pth"
    # --quick's encoder size (16 wide, 1 block); the real file needs no size flags (ViT-Base).
    tensors = write_official_checkpoint(checkpoint, embed_dim=16, depth=1)
    json_path = tmp_path / "accuracy.json"
    result = run_script(
        "--data-root",
        str(shared_data),
        "--ckpt-path",
        str(checkpoint),
        "--json",
        str(json_path),
        "--splits",
        "per_class",
        "--methods",
        "FULL",
        "KRONA_PLUS",
        "--seg-methods",
        "KRONA_PLUS",
    )
    _, rows = table_rows(result.stdout)
    assert [r[1] for r in rows] == ["FULL", "KRONA_PLUS", "SVM_RBF", "RANDOM_FOREST", "KRONA_PLUS"]
    runs = json.loads(json_path.read_text())["runs"]
    deep = [r for r in runs if r["formulation"] != "spectral"]
    assert len(deep) == 3
    assert all(r["checkpoint_tensors"] == tensors for r in deep)
    assert np.isfinite([r["oa"] for r in runs]).all()


def test_missing_data_root_names_the_fix(tmp_path, capsys):
    accuracy = import_accuracy()
    with pytest.raises(SystemExit) as exit_info:
        accuracy.parse_args(["--data-root", str(tmp_path)])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert "indian_pines" in message and "--data-root" in message


def import_accuracy():
    """The study module, imported on use: importing it imports TerraTorch (seconds)."""
    from benchmarks import accuracy

    return accuracy


def test_cosine_schedule_reaches_zero_at_the_last_step_through_terratorch():
    from terratorch.tasks.optimizer_factory import optimizer_factory

    accuracy = import_accuracy()
    assert accuracy.schedule_args("constant", 100) == {}
    parameter = torch.nn.Parameter(torch.zeros(1))
    config = optimizer_factory("AdamW", 1e-3, [parameter], **accuracy.schedule_args("cosine", 100))
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]
    assert scheduler["interval"] == "step"  # stepped per optimizer step, not per epoch
    rates = []
    for _ in range(100):
        optimizer.step()
        scheduler["scheduler"].step()
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates[49] == pytest.approx(0.5e-3, rel=0.02)
    assert rates[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in itertools.pairwise(rates))


def test_a_runs_file_of_another_schedule_is_refused_before_training(shared_data, tmp_path, capsys):
    accuracy = import_accuracy()
    record = {
        "formulation": "segmentation",
        "method": "FULL",
        "split": "per_class",
        "seed": 0,
        "oa": 90.0,
        "aa": 80.0,
        "kappa": 88.0,
        "trainable_encoder": 1,
        "trainable_total": 2,
        "train_pixels": 3,
        "test_pixels": 4,
        "fit_seconds": 5.0,
    }  # recorded before the schedule options existed: a constant rate
    runs = tmp_path / "runs.jsonl"
    runs.write_text(json.dumps(record) + "\n")
    common = ["--data-root", str(shared_data), "--runs", str(runs)]
    with pytest.raises(SystemExit) as exit_info:
        accuracy.parse_args(common)  # segmentation defaults to cosine
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert "segmentation runs trained with the constant learning-rate schedule" in message
    assert "pass --seg-schedule constant" in message
    args = accuracy.parse_args([*common, "--seg-schedule", "constant"])
    assert accuracy.schedules_of(args) == {"classification": "constant", "segmentation": "constant"}
    # The classification flag does not touch segmentation runs, and the other way round.
    with pytest.raises(SystemExit):
        accuracy.parse_args([*common, "--schedule", "constant"])
    capsys.readouterr()
    runs.write_text(json.dumps({**record, "formulation": "classification", "schedule": "cosine"}))
    with pytest.raises(SystemExit):
        accuracy.parse_args(common)
    assert "pass --schedule cosine" in capsys.readouterr().err
    assert accuracy.parse_args([*common, "--schedule", "cosine"]).schedule == "cosine"
