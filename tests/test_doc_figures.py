"""Figures the README and docs state about the shipped configs, recomputed from the configs.

``benchmarks/docgen/figures.py`` computes them; the generated section of docs/reproduce_paper.md
must equal its output, and the figures quoted in prose elsewhere must equal the computed ones.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from benchmarks.docgen import figures as doc_figures

REPO_ROOT = Path(__file__).resolve().parents[1]


def flat(path: str) -> str:
    """The file's text with every run of whitespace (line breaks included) as one space."""
    return " ".join((REPO_ROOT / path).read_text().split())


def section(path: str, name: str) -> str:
    text = (REPO_ROOT / path).read_text()
    found = re.search(rf"<!-- {name}:start -->\n(.*?)\n<!-- {name}:end -->", text, re.DOTALL)
    assert found, (
        f"{path} has no {name} section; run python -m benchmarks.docgen.figures --out {path}"
    )
    return found.group(1)


@pytest.mark.slow
def test_paper_sizes_and_parameter_counts_are_the_configs():
    rows = doc_figures.paper_sizes()
    expected = f"{doc_figures.HEADING}\n\n{doc_figures.paper_sizes_markdown(rows)}"
    assert section("docs/reproduce_paper.md", doc_figures.SECTION) == expected, (
        "docs/reproduce_paper.md is stale: python -m benchmarks.docgen.figures "
        "--out docs/reproduce_paper.md"
    )
    krona_plus = next(row for row in rows if row["method"] == "krona_plus")
    adapters = krona_plus["adapters"]
    encoder = doc_figures.encoder_parameters()
    share = f"{100 * adapters / encoder:.3f}%"
    assert f"{adapters:,} parameters, {share} of the encoder" in flat("README.md")
    assert (
        f"24 matrices x 1,600 = {adapters:,} trainable encoder parameters, {share} of the "
        f"encoder's {encoder / 1e6:.1f} M" in flat("docs/concepts.md")
    )
    assert f"({adapters:,} trainable encoder parameters)" in flat("docs/reproduce_paper.md")
    assert f"here {adapters:,} float32 numbers, {4 * adapters / 1e6:.2f} MB" in flat(
        "docs/reproduce_paper.md"
    )
    assert f"writes the {adapters:,} KronA+ parameters" in flat("docs/quickstart.md")


def test_quickstart_split_and_step_count_are_the_configs(shared_data):
    figures = doc_figures.quickstart_figures(shared_data / "indian_pines")
    train, test, steps = figures["train_pixels"], figures["test_pixels"], figures["steps"]
    batches, epochs = figures["batches_per_epoch"], figures["epochs"]
    assert batches == figures["expected_batches"]  # every training pixel, the last batch short
    assert f"same {test:,} test pixels" in flat("README.md")
    quickstart = flat("docs/quickstart.md")
    assert f"seed 0 ({train:,} pixels)" in quickstart
    assert f"on the other {test:,} labelled pixels" in quickstart
    assert f"{train} training and {test} test pixels" in quickstart  # the sample output
    assert f"{steps} steps: {batches} batches x {epochs} epochs" in quickstart


def test_quickstart_figures_quoted_are_the_stored_run():
    """The README's table and docs/quickstart.md's sample output come from one stored run."""
    run = json.loads((REPO_ROOT / "benchmarks/results/quickstart_results.json").read_text())
    assert run["split"]["protocol"] == "per_class"
    rows = {
        "spectralgpt_small_full_finetuning": "SpectralGPT, small",
        "svm_rbf": "SVM, RBF on standardised spectra",
        "svm_rbf_smoothed": f"SVM + {run['svm_rbf_smoothed']['window']} x",
    }
    readme = (REPO_ROOT / "README.md").read_text().splitlines()
    sample = flat("docs/quickstart.md")
    for key, start in rows.items():
        figures = run[key]
        oa, aa, kappa = 100 * figures["OA"], 100 * figures["AA"], figures["Kappa"]
        line = next(row for row in readme if row.startswith(f"| {start}"))
        assert line.endswith(f"| {oa:.2f}% | {aa:.2f}% | {kappa:.4f} |"), line
        assert f"{oa:.2f} {aa:.2f} {kappa:.4f}" in sample, key
    # Wherever the per-class figure is quoted, the leak is said and SVM + smoothing is beside it.
    assert "This split is spatially leaky" in flat("README.md")
    assert "spatially leaky" in sample
