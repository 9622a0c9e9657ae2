"""benchmarks/protocol.py: choices on validation only, test read once, the same pixels for all."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from scipy import stats

from benchmarks import protocol
from benchmarks.docgen import protocol_report


def reference_smooth(logp: np.ndarray, window: int) -> np.ndarray:
    """Mean over each pixel's window, edges replicated, in float64 with explicit loops."""
    height, width, _ = logp.shape
    radius = window // 2
    padded = np.pad(logp.astype(np.float64), ((radius, radius), (radius, radius), (0, 0)), "edge")
    out = np.empty(logp.shape, dtype=np.float64)
    for i in range(height):
        for j in range(width):
            out[i, j] = padded[i : i + window, j : j + window].mean(axis=(0, 1))
    return out


@pytest.mark.parametrize("window", [1, 3, 5, 13])
def test_smoothing_is_the_window_mean_with_replicated_edges(window):
    logp = np.random.default_rng(window).normal(size=(9, 11, 4))
    np.testing.assert_allclose(protocol.smooth(logp, window), reference_smooth(logp, window))


class FakeSplit:
    def __init__(self, train, val, test):
        self.train, self.val, self.test = (np.asarray(a) for a in (train, val, test))


def fake_context() -> protocol.Context:
    labels = np.array([[1, 1, 2, 2], [1, 1, 2, 2]])  # pixels 0-7; classes 1, 2
    split = FakeSplit(train=[0, 2], val=[1, 3], test=[4, 5, 6, 7])
    scene = type("Scene", (), {"labels": labels, "shape": labels.shape, "num_classes": 2})()
    return protocol.Context("per_class", 0, scene, split, None, None, None, epochs=1)


def one_hot_map(classes: list[int]) -> np.ndarray:
    """(2, 4, 2) log-probabilities predicting ``classes`` (0/1) pixel by pixel."""
    logp = np.full((8, 2), -5.0)
    logp[np.arange(8), classes] = 0.0
    return logp.reshape(2, 4, 2)


def test_the_choice_is_made_on_validation_and_test_is_read_once(monkeypatch):
    truth = [0, 0, 1, 1, 0, 0, 1, 1]
    inverted = [1 - c for c in truth]
    # lr 1: right on validation, wrong on test; lr 2: the reverse. A choice on validation
    # takes lr 1 and reports its (bad) test score.
    maps = {
        1.0: one_hot_map([*truth[:4], *inverted[4:]]),
        2.0: one_hot_map([*inverted[:4], *truth[4:]]),
    }
    row = protocol.Row("fake", "fake", "spectral", lambda c, lr: maps[lr], (1.0, 2.0), (1,))
    reads = []
    real_scores = protocol.scores
    monkeypatch.setattr(
        protocol,
        "scores",
        lambda m, labels, pixels: reads.append(pixels) or real_scores(m, labels, pixels),
    )
    record = protocol.run_row(row, fake_context())
    assert record["chosen"] == {"lr": 1.0, "window": 1, "val_oa": 100.0}
    assert record["test"]["oa"] == 0.0
    assert len(reads) == 1 and list(reads[0]) == [4, 5, 6, 7]
    assert {(c["lr"], c["val_oa"]) for c in record["candidates"]} == {(1.0, 100.0), (2.0, 0.0)}


def test_rows_differing_only_in_windows_share_one_fit():
    calls = []

    def train(context, lr):
        calls.append(lr)
        return one_hot_map([0, 0, 1, 1, 0, 0, 1, 1])

    context = fake_context()
    protocol.run_row(protocol.Row("a", "a", "spectral", train, (None,), (1,)), context)
    protocol.run_row(protocol.Row("b", "b", "spectral", train, (None,), (1, 3)), context)
    assert calls == [None]


def run(row: str, draw: int, oa: float, val: float) -> dict:
    return {
        "row": row,
        "protocol": "spatially_disjoint",
        "draw": draw,
        "test": {"oa": oa, "aa": oa, "kappa": oa},
        "chosen": {"lr": None, "window": 1, "val_oa": val},
    }


def test_paired_interval_is_the_t_interval_of_the_draws_differences():
    a = [61.0, 64.5, 59.0, 70.2, 66.1]
    b = [60.0, 62.0, 60.5, 66.0, 63.3]
    runs = [run("a", d, x, 0) for d, x in enumerate(a)] + [
        run("b", d, x, 0) for d, x in enumerate(b)
    ]
    rows = protocol_report.by_row(runs, "spatially_disjoint")
    pair = protocol_report.paired(rows, "a", "b")
    interval = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert pair.draws == 5
    assert pair.mean == pytest.approx(np.mean(np.subtract(a, b)))
    assert (pair.low, pair.high) == pytest.approx((interval.low, interval.high))
    assert pair.verdict == ("higher" if interval.low > 0 else "indistinguishable")


def test_paired_uses_only_the_draws_both_rows_have():
    rows = protocol_report.by_row(
        [run("a", d, 50.0 + d, 0) for d in range(4)] + [run("b", d, 50.0, 0) for d in (1, 3)],
        "spatially_disjoint",
    )
    pair = protocol_report.paired(rows, "a", "b")
    assert pair.draws == 2
    assert pair.mean == pytest.approx(2.0)  # draws 1 and 3: +1 and +3


def test_a_single_draw_has_no_interval():
    rows = protocol_report.by_row(
        [run("a", 0, 60.0, 0), run("b", 0, 50.0, 0)], "spatially_disjoint"
    )
    pair = protocol_report.paired(rows, "a", "b")
    assert math.isnan(pair.low) and pair.verdict == "one draw: no interval"


def test_the_best_route_is_chosen_by_validation_not_test():
    rows = protocol_report.by_row(
        [run("gpt_x", 0, oa=90.0, val=40.0), run("gpt_y", 0, oa=50.0, val=60.0)],
        "spatially_disjoint",
    )
    assert protocol_report.best_route(rows, ["gpt_x", "gpt_y"]) == "gpt_y"


def test_every_row_trains_the_same_split_draw(shared_data, tmp_path):
    """The split is drawn once per draw and saved; its file recreates it exactly."""
    context = protocol.draw_context("spatially_disjoint", 3, shared_data, tmp_path)
    again = protocol.Split.load(context.split_file)
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(again, name), getattr(context.split, name))
    assert not set(context.split.val) & set(context.split.test)
    assert not set(context.split.train) & set(context.split.val)


@pytest.mark.slow
def test_a_deep_row_builds_the_shipped_experiment_and_chooses_on_validation(shared_data, tmp_path):
    context = protocol.draw_context("spatially_disjoint", 0, shared_data, tmp_path)
    context.epochs = 1
    row = protocol.Row("gpt", "gpt", "spectralgpt", protocol.ROWS["gpt_random_full"].train, (1e-3,))
    record = protocol.run_row(row, context)
    (experiment,) = tmp_path.rglob("experiment.yaml")
    written = protocol.yaml.safe_load(experiment.read_text())
    shipped = protocol.load_experiment("quickstart")["model"]["init_args"]["model_args"]
    path = written["model"]["init_args"]["model_args"]["spectral_path"]
    assert path == shipped["spectral_path"] and path["width"] == 64  # the quickstart's path
    assert written["data"]["init_args"]["split_file"] == str(context.split_file)
    best = max(record["candidates"], key=lambda c: c["val_oa"])
    assert record["chosen"]["val_oa"] == best["val_oa"]
    assert 0 <= record["test"]["oa"] <= 100
    assert record["pixels"]["test"] == len(context.split.test)


@pytest.mark.slow
def test_the_spectral_transformer_row_reads_one_pixel_from_its_pixel_mae(
    shared_data, tmp_path, monkeypatch
):
    """The moonshot rows: the quickstart file on 1-pixel patches, from a pixel MAE (inductive)."""
    monkeypatch.setattr(protocol, "PIXEL_EPOCHS", 1)
    monkeypatch.setattr(protocol, "PIXEL_MAE_STEPS", 3)
    context = protocol.draw_context("spatially_disjoint", 0, shared_data, tmp_path)
    row = protocol.ROWS["gpt_pixel_mae"]
    record = protocol.run_row(protocol.Row("px", "px", "spectralgpt", row.train, (1e-3,)), context)
    (mae_file,) = (tmp_path / "spatially_disjoint" / "draw0" / "mae_pixel").rglob("experiment.yaml")
    mae = protocol.yaml.safe_load(mae_file.read_text())
    (source,) = mae["data"]["init_args"]["scenes"]
    assert source["leave_out_test"] and source["split_file"] == str(context.split_file)
    assert mae["data"]["init_args"]["window_size"] == 1
    assert mae["model"]["init_args"]["model_args"]["num_bands"] == 200
    (fit_file,) = (tmp_path / "spatially_disjoint" / "draw0").glob("pixel_mae_lr*/experiment.yaml")
    fit = protocol.yaml.safe_load(fit_file.read_text())
    data, args = fit["data"]["init_args"], fit["model"]["init_args"]["model_args"]
    assert (data["band_route"], data["patch_size"], data["img_size"]) == ("standardize", 1, 1)
    assert not data["append_spectra"] and "spectral_path" not in args
    assert (args["backbone_patch_size"], args["backbone_num_bands"]) == (1, 200)
    assert args["backbone_ckpt_path"] == str(mae_file.parent / "encoder.pth")
    assert fit["trainer"]["max_epochs"] == record["notes"]["epochs"] == 1
    best = max(record["candidates"], key=lambda c: c["val_oa"])
    assert record["chosen"]["val_oa"] == best["val_oa"] and record["notes"]["pixel_mae_s"] > 0
    assert record["pixels"]["test"] == len(context.split.test)


def test_the_docs_section_is_the_one_the_stored_runs_generate(tmp_path):
    """Every figure of docs/results.md's protocol section comes from the stored runs file."""
    results = protocol.REPO / "docs" / "results.md"
    regenerated = tmp_path / "results.md"
    regenerated.write_text(results.read_text())
    runs = protocol.read_runs(protocol.RUNS)
    assert sum(r["protocol"] == "spatially_disjoint" for r in runs) >= 10 * len(protocol.HEADLINE)
    protocol_report.write_report(runs, regenerated)
    assert regenerated.read_text() == results.read_text()


def test_every_stored_run_chose_on_validation_and_read_test_once():
    """Each stored run holds its candidates' validation OA and the choice is their best."""
    for record in protocol.read_runs(protocol.RUNS):
        best = max(c["val_oa"] for c in record["candidates"])
        assert record["chosen"]["val_oa"] == best, (record["row"], record["draw"])
        assert all("test" not in c for c in record["candidates"])


def test_protocol_figures_quoted_outside_results_are_in_the_generated_section():
    """A figure quoted beside a link to the protocol section must be one the section holds."""
    text = (protocol.REPO / "docs" / "results.md").read_text()
    generated = text[text.index("<!-- protocol:start -->") : text.index("<!-- protocol:end -->")]
    pages = [protocol.REPO / "README.md", *sorted((protocol.REPO / "docs").glob("*.md"))]
    quoted = 0
    for page in pages:
        if page.name == "results.md":
            continue
        for paragraph in re.split(r"\n\s*\n|\n(?=\s*- )", page.read_text()):  # paragraphs, items
            if "results.md#evaluation-protocol" not in paragraph:
                continue
            prose = re.sub(r"`[^`]*`", "", paragraph)  # code spans hold settings, not figures
            for figure in re.findall(r"[-+]?\d+\.\d\b", prose):
                quoted += 1
                assert figure in generated, f"{page.name}: {figure} is not in the protocol section"
    assert quoted >= 10  # the pages do quote it: the check is not vacuous
