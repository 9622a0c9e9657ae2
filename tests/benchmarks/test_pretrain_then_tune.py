"""benchmarks/pretrain_then_tune.py in --quick mode: pre-training, fine-tuning, resuming, report."""

from __future__ import annotations

import dataclasses
import logging
import re
import warnings
from pathlib import Path

import pytest
import torch
from markdown_report import image_links, number, section, tables

from benchmarks import pretrain_then_tune as bench
from benchmarks.hsi_models import QUIET_LOGGERS
from terratorch_hsi_peft.backbones import spectralgpt_vit_base

REPO_ROOT = Path(__file__).resolve().parents[2]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CELL = re.compile(r"^-?\d+\.\d$")  # one seed: its value, no spread


@pytest.fixture(autouse=True)
def keep_logging_and_warnings():
    """``bench.main`` quiets library loggers and warnings for its table (``quiet_libraries``);
    undo it, or later tests in this process that read the library's log lines see none."""
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    with warnings.catch_warnings():
        yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def quick(tmp_path: Path, shared_data: Path, *extra: str) -> list[str]:
    return [
        "--quick",
        "--data-root",
        str(shared_data),
        "--work-dir",
        str(tmp_path / "work"),
        "--methods",
        "FULL",
        "LINEAR_PROBE",
        "KRONA_PLUS",
        "--encoders",
        "in_domain",
        "random",
        "cross_sensor",
        *extra,
    ]


def test_runs_are_ordered_by_what_they_tell(shared_data):
    plan = bench.planned_runs(bench.parse_args(["--data-root", str(shared_data)]))
    assert len(plan) == len(set(plan)) == 4 * 7 * 2 * 3 + 2 * 2 * 3
    first = plan[: 2 + 2 * 7]  # per-class seed 0: baselines, then in-domain / random pairs
    assert [p[0] for p in first[:2]] == ["-", "-"]
    assert {p[0] for p in first[2:]} == {"in_domain", "random"}
    assert first[2][:2] == ("in_domain", "FULL") and first[3][:2] == ("random", "FULL")
    assert {(p[2], p[3]) for p in first} == {("per_class", 0)}
    cross = plan[len(first) : len(first) + 14]
    assert {p[0] for p in cross} == {"cross_sensor", "random_s2"}
    assert {(p[2], p[3]) for p in cross} == {("per_class", 0)}
    assert plan[len(first) + 14 + 2][2:] == ("spatially_disjoint", 0)
    assert {p[3] for p in plan[: len(first) + 14 + 2 + 28]} == {0}


def test_a_line_cut_short_is_redone_and_a_repeated_run_counts_once(tmp_path, capsys):
    runs = tmp_path / "runs.jsonl"
    record = {"key": "random|FULL|per_class|0", "settings": {"steps": 2}, "oa": 1.0}
    bench.append_run(runs, record)
    bench.append_run(runs, {**record, "oa": 2.0})
    with runs.open("a") as f:
        f.write('{"key": "random|LORA|per')  # a run killed while writing
    assert [r["oa"] for r in bench.read_runs(runs)] == [2.0]
    assert "unreadable line" in capsys.readouterr().err


def test_runs_of_other_settings_or_another_probe_lr_are_not_mixed_in(shared_data):
    args = bench.parse_args(["--data-root", str(shared_data)])
    same = bench.settings(args, bench.GEOMETRY)
    records = [
        {"method": "FULL", "settings": same, "lr": 1e-3},
        {"method": "FULL", "settings": {**same, "steps": 10}, "lr": 1e-3},
        {"method": "LINEAR_PROBE", "settings": same, "lr": 1e-3},
        {"method": "LINEAR_PROBE", "settings": same, "lr": args.probe_lr},
    ]
    kept = bench.matching(records, args, bench.GEOMETRY)
    assert kept == [records[0], records[3]]


def test_geometry_fields_left_unset_do_not_orphan_stored_runs(shared_data):
    """Runs stored before Geometry had spectral_path (None here) still match; a set one differs."""
    args = bench.parse_args(["--data-root", str(shared_data)])
    stored = bench.settings(args, bench.GEOMETRY)
    assert bench.GEOMETRY.spectral_path is None and "spectral_path" not in stored["geometry"]
    with_path = bench.settings(args, dataclasses.replace(bench.GEOMETRY, spectral_path=8))
    assert with_path["geometry"]["spectral_path"] == 8 and with_path != stored


@pytest.mark.slow
def test_quick_grid_pretrains_tunes_resumes_and_writes_the_section(tmp_path, shared_data, capsys):
    results = tmp_path / "docs" / "results.md"
    results.parent.mkdir()
    results.write_text("# Results\n\nkept text\n")
    args = quick(tmp_path, shared_data, "--results-md", str(results))
    assert bench.main(args) == 0
    runs = bench.read_runs(tmp_path / "work" / "runs.jsonl")
    # 3 methods x 3 encoders, and both baselines, on the per-class split, seed 0
    assert sorted(r["key"] for r in runs) == sorted(
        [f"{e}|{m}|per_class|0" for e in ("in_domain", "random", "cross_sensor")
         for m in ("FULL", "LINEAR_PROBE", "KRONA_PLUS")]
        + ["-|SVM_RBF|per_class|0", "-|RANDOM_FOREST|per_class|0"]
    )  # fmt: skip
    by_key = {r["key"]: r for r in runs}
    # the linear probe trains the head only; KronA+ trains adapters, not the frozen weights
    assert by_key["in_domain|LINEAR_PROBE|per_class|0"]["trainable_encoder"] == 0
    assert by_key["in_domain|LINEAR_PROBE|per_class|0"]["lr"] == 3e-2  # --probe-lr
    assert by_key["in_domain|KRONA_PLUS|per_class|0"]["lr"] == 1e-3  # --lr
    full = by_key["in_domain|FULL|per_class|0"]
    krona = by_key["in_domain|KRONA_PLUS|per_class|0"]
    assert 0 < krona["trainable_encoder"] < full["trainable_encoder"]
    # pre-trained encoders load whole (every tensor); the random one loads nothing
    assert full["checkpoint_tensors"] > 0 and krona["checkpoint_tensors"] > 0
    assert by_key["random|FULL|per_class|0"]["checkpoint_tensors"] == 0

    # the in-domain encoder saw Indian Pines (through the PCA the random rows use too); the
    # cross-sensor one saw Jasper Ridge and Samson only, as Sentinel-2 bands
    work = tmp_path / "work"
    in_domain = torch.load(next(work.glob("encoder_indian_pines_*.pth")), weights_only=True)
    cross = torch.load(next(work.glob("encoder_jasper_samson_*.pth")), weights_only=True)
    assert in_domain["scenes"] == ["indian_pines"]
    assert cross["scenes"] == ["jasper", "samson"]
    assert {r["route"] for r in cross["band_routes"]} == {"sentinel2"}
    scene = bench.IndianPines(shared_data / "indian_pines")
    assert torch.equal(in_domain["band_routes"][0]["matrix"], bench.scene_wide_pca(scene).matrix)
    assert in_domain["pretraining"]["steps"] == 2
    geometry = bench.QUICK_GEOMETRY
    backbone = spectralgpt_vit_base(
        num_bands=12,
        img_size=geometry.img_size,
        patch_size=geometry.patch_size,
        embed_dim=geometry.embed_dim,
        depth=geometry.depth,
        num_heads=geometry.num_heads,
        ckpt_path=str(next(work.glob("encoder_indian_pines_*.pth"))),
    )
    assert not backbone.load_report.missing and not backbone.load_report.dropped

    # the table: one row per (encoder, method) and per baseline, every score a number
    printed = tables(capsys.readouterr().out)
    ((_, rows),) = printed
    assert len(rows) == 9 + 2
    summary = {(row["encoder"], row["method"]): row for row in bench.summarise(runs)}
    for cells in rows:
        assert all(CELL.match(c) for c in cells[3:6]), cells
        assert cells[6] == "1"  # one seed done
    for run in runs:  # each run's per-class OA, rounded as the table shows it
        cells = rows[list(summary).index((run["encoder"], run["method"]))]
        assert number(cells[3]) == pytest.approx(run["oa"], abs=0.051)
    text = results.read_text()
    assert text.startswith("# Results\n\nkept text\n")
    body = section(text, "pretrain_then_tune")
    assert tables(body) == printed
    # the verdicts on the targets that these rows give
    assert all(line in body for line in bench.targets(list(summary.values())))
    assert image_links(body) == ["img/pretrain_then_tune.png"]
    assert (results.parent / "img" / "pretrain_then_tune.png").read_bytes()[:8] == PNG_MAGIC

    # a second start finds every run done and trains nothing: the same file, the same table
    before = (work / "runs.jsonl").read_text()
    assert bench.main(args) == 0
    assert (work / "runs.jsonl").read_text() == before  # nothing trained again
    capsys.readouterr()
    # --report-only rebuilds the section from the runs file alone
    results.write_text("# Results\n")
    assert bench.main([*args, "--report-only"]) == 0
    assert tables(section(results.read_text(), "pretrain_then_tune")) == printed
    # ... of the grid asked for: here full fine-tuning only (and the baselines)
    capsys.readouterr()
    only_full = [a for a in args if a not in ("LINEAR_PROBE", "KRONA_PLUS")]
    assert bench.main([*only_full, "--report-only"]) == 0
    out = capsys.readouterr()
    ((_, rows),) = tables(out.out)
    assert [cells[1] for cells in rows] == [
        "FULL", "FULL", "FULL", "SVM_RBF", "RANDOM_FOREST"
    ]  # fmt: skip


def test_bad_settings_are_refused_with_the_fix(tmp_path, shared_data, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["--data-root", str(tmp_path)])
    assert "indian_pines/, jasper_ridge/ and samson/" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.parse_args(["--data-root", str(shared_data), "--steps", "0"])
    assert "--steps must be >= 1" in capsys.readouterr().err


def test_rows_show_the_spread_of_several_seeds_and_count_them():
    def record(seed: int, oa: float, split: str = "per_class") -> dict:
        return {
            "encoder": "in_domain",
            "method": "KRONA_PLUS",
            "split": split,
            "seed": seed,
            "oa": oa,
            "aa": oa,
            "kappa": oa,
            "trainable_encoder": 1024,
            "trainable_total": 6224,
            "fit_seconds": 1.0,
        }

    records = [record(0, 80.0), record(1, 82.0), record(0, 60.0, "spatially_disjoint")]
    table = bench.markdown_table(bench.summarise(records), list(bench.SPLITS))
    cells = [c.strip() for c in table.splitlines()[2].strip("|").split("|")]
    assert cells[:3] == ["in-domain MAE (PCA, transductive)", "KRONA_PLUS", "6,224 (1,024)"]
    assert cells[3] == "81.0 ± 1.4"  # two seeds: mean ± sample std
    assert cells[6] == "60.0"  # one seed: its value
    assert cells[9] == "2 / 1"  # seeds done per split
