"""The "Evaluation protocol" section of docs/results.md, written from the protocol's runs file.

Every figure of the section is computed here from ``benchmarks/results/protocol_runs.jsonl``
(tests/benchmarks/test_protocol_report.py fails when the section in the docs differs from what
the runs give). Comparisons are paired: the difference of two rows on each split draw both have,
its mean and the 95% t-interval of the mean; an interval that holds zero is "indistinguishable".
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from benchmarks.docgen.sections import update_markdown_section

__all__ = ["Paired", "best_route", "paired", "report_body", "write_report"]

SECTION = "protocol"
HEADING = "## Evaluation protocol: what SpectralGPT and its adapters add"
PROTOCOL_NAMES = {
    "spatially_disjoint": "spatially disjoint (16 x 16 blocks)",
    "per_class": "per-class 10% (spatially leaky)",
}


@dataclass(frozen=True)
class Paired:
    """A paired comparison of two rows over the draws both have (OA points)."""

    first: str
    second: str
    draws: int
    mean: float
    low: float
    high: float

    @property
    def verdict(self) -> str:
        """``higher`` / ``lower`` when the 95% interval excludes zero, else indistinguishable."""
        if self.draws < 2:
            return "one draw: no interval"
        if self.low > 0:
            return "higher"
        if self.high < 0:
            return "lower"
        return "indistinguishable"

    def describe(self) -> str:
        """``+1.2 [-0.3, +2.7]`` (mean and interval in OA points)."""
        if self.draws < 2:
            return f"{self.mean:+.1f}"
        return f"{self.mean:+.1f} [{self.low:+.1f}, {self.high:+.1f}]"


def by_row(runs: Iterable[dict[str, Any]], protocol: str) -> dict[str, dict[int, dict[str, Any]]]:
    """``{row: {draw: run}}`` of one protocol (the last run of a row and draw wins)."""
    table: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for run in runs:
        if run["protocol"] == protocol:
            table[run["row"]][run["draw"]] = run
    return dict(table)


def paired(rows: dict[str, dict[int, dict[str, Any]]], first: str, second: str) -> Paired | None:
    """Mean and 95% t-interval of ``OA(first) - OA(second)`` over their common draws."""
    if first not in rows or second not in rows:
        return None
    draws = sorted(set(rows[first]) & set(rows[second]))
    if not draws:
        return None
    diffs = np.array([rows[first][d]["test"]["oa"] - rows[second][d]["test"]["oa"] for d in draws])
    mean = float(diffs.mean())
    if len(diffs) < 2:
        return Paired(first, second, len(diffs), mean, math.nan, math.nan)
    half = float(stats.t.ppf(0.975, len(diffs) - 1) * diffs.std(ddof=1) / math.sqrt(len(diffs)))
    return Paired(first, second, len(diffs), mean, mean - half, mean + half)


def best_route(rows: dict[str, dict[int, dict[str, Any]]], candidates: Iterable[str]) -> str | None:
    """The candidate row with the highest mean *validation* OA of its choices (test unread)."""
    scored = {
        name: float(np.mean([run["chosen"]["val_oa"] for run in rows[name].values()]))
        for name in candidates
        if name in rows
    }
    return max(scored, key=scored.get) if scored else None


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f}"


def _choices(runs: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = defaultdict(int)
    for run in runs:
        lr, window = run["chosen"]["lr"], run["chosen"]["window"]
        counts[(f"lr {lr:g}, " if lr is not None else "") + f"k {window}"] += 1
    return "; ".join(f"{key} ({n})" for key, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def results_table(rows: dict[str, dict[int, dict[str, Any]]], labels: dict[str, str]) -> str:
    """One line per row: draws, test OA/AA/kappa (mean ± std), validation OA, its choices."""
    lines = [
        "| Row | Draws | Test OA | AA | κ | Validation OA | Choices (lr, k: draws) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, label in labels.items():
        if name not in rows:
            continue
        runs = [rows[name][d] for d in sorted(rows[name])]
        test = {key: [r["test"][key] for r in runs] for key in ("oa", "aa", "kappa")}
        val = [r["chosen"]["val_oa"] for r in runs]
        lines.append(
            f"| {label} | {len(runs)} | {_mean_std(test['oa'])} | {_mean_std(test['aa'])} | "
            f"{_mean_std(test['kappa'])} | {_mean_std(val)} | {_choices(runs)} |"
        )
    return "\n".join(lines)


def comparisons_table(pairs: list[tuple[str, Paired | None]]) -> str:
    """One line per comparison: draws, mean difference and its 95% interval, verdict."""
    lines = [
        "| Comparison | Draws | OA difference [95% CI] | Verdict |",
        "|---|---|---|---|",
    ]
    for text, pair in pairs:
        if pair is not None:
            lines.append(f"| {text} | {pair.draws} | {pair.describe()} | {pair.verdict} |")
    return "\n".join(lines)


def report_body(runs: list[dict[str, Any]], labels: dict[str, str]) -> str:
    """The section's Markdown: protocol, tables per split, comparisons, targets."""
    from benchmarks.protocol import HEADLINE, LR_ADAPTER, LR_FULL, LR_HEAD, LR_PATH, WINDOWS

    parts = [_protocol_text(runs, LR_FULL, LR_ADAPTER, LR_HEAD, LR_PATH, WINDOWS)]
    for protocol, title in PROTOCOL_NAMES.items():
        rows = by_row(runs, protocol)
        if not rows:
            continue
        parts.append(f"### {title.capitalize()}")
        if protocol == "per_class":
            parts.append(
                "The per-class split is spatially leaky: most test pixels have a training pixel "
                "inside their 9 x 9 patch, so these figures overstate what a model does on "
                "unseen areas. They sit next to SVM + smoothing on the same pixels."
            )
        parts.append(results_table(rows, labels))
        parts.append(_comparisons(rows, labels, HEADLINE))
        if protocol == "spatially_disjoint":  # the targets are set on this split
            routes = _on_every_draw(rows, _gpt_rows(rows, labels))
            parts.append(_targets(rows, best_route(rows, routes)))
    return "\n\n".join(parts)


def _comparisons(
    rows: dict[str, dict[int, dict[str, Any]]], labels: dict[str, str], headline: tuple[str, ...]
) -> str:
    gpt = _gpt_rows(rows, labels)
    every_draw = _on_every_draw(rows, gpt)
    random_routes = [name for name in every_draw if name.startswith("gpt_random")]
    mae_routes = [name for name in gpt if name.startswith("gpt_mae")]
    best, best_random, best_mae = (
        best_route(rows, every_draw),
        best_route(rows, random_routes),
        best_route(rows, [name for name in mae_routes if name in every_draw]),
    )
    pairs: list[tuple[str, Paired | None]] = []
    if best is not None:
        pairs.append(
            (
                f"**Encoder's contribution**: best SpectralGPT route ({labels[best]}, chosen on "
                "validation) - path alone + smoothing",
                paired(rows, best, "path_smoothed"),
            )
        )
        for name, route in (("random", best_random), ("MAE-pretrained", best_mae)):
            if route is not None and route != best:
                pairs.append(
                    (
                        f"Encoder's contribution, {name} encoder ({labels[route]}) - path "
                        "alone + smoothing",
                        paired(rows, route, "path_smoothed"),
                    )
                )
        pairs.append(
            ("Best SpectralGPT route - SVM + smoothing", paired(rows, best, "svm_smoothed"))
        )
    for first, second in (
        ("path_smoothed", "svm_smoothed"),
        ("svm_smoothed", "svm"),
        ("path_smoothed", "path"),
        ("gpt_mae_full", "gpt_random_full"),
        ("gpt_random_full", "gpt_random_nopath"),
        ("gpt_random_full", "gpt_random_frozen"),
        ("gpt_mae_frozen", "gpt_random_frozen"),
        ("gpt_pixel_random", "path_smoothed"),
        ("gpt_pixel_mae", "path_smoothed"),
        ("gpt_pixel_mae", "svm_smoothed"),
        ("gpt_pixel_mae", "gpt_pixel_random"),
        ("gpt_pixel_mae", "gpt_mae_full"),
    ):
        if first in labels and second in labels:
            pairs.append((f"{labels[first]} - {labels[second]}", paired(rows, first, second)))
    for name in mae_routes:
        if name not in ("gpt_mae_full", "gpt_mae_frozen"):
            text = f"{labels[name]} - full fine-tuning (MAE encoder)"
            pairs.append((text, paired(rows, name, "gpt_mae_full")))
    headline_draws = min((len(rows[name]) for name in headline if name in rows), default=0)
    text = (
        "Paired differences of test OA (points), over the draws both rows have "
        f"({headline_draws} for the headline rows); 95% t-intervals; an interval holding zero is "
        "indistinguishable. The best route is, among the SpectralGPT rows run on every draw, "
        "the one with the highest mean validation OA."
    )
    return text + "\n\n" + comparisons_table(pairs)


def _gpt_rows(rows: dict[str, dict[int, dict[str, Any]]], labels: dict[str, str]) -> list[str]:
    """The SpectralGPT rows present, in the order of ``labels``."""
    return [name for name in labels if name.startswith("gpt_") and name in rows]


def _on_every_draw(rows: dict[str, dict[int, dict[str, Any]]], names: list[str]) -> list[str]:
    """Those of ``names`` run on the most draws: a best route is not picked on fewer draws."""
    most = max((len(rows[name]) for name in names), default=0)
    return [name for name in names if len(rows[name]) == most]


def _targets(rows: dict[str, dict[int, dict[str, Any]]], best: str | None) -> str:
    lines = ["Targets of the evaluation issue, checked on these rows:", ""]
    if best is not None:
        over_path = paired(rows, best, "path_smoothed")
        over_svm = paired(rows, best, "svm_smoothed")
        if over_path and over_svm:
            met = over_path.low > 0 and over_svm.low > 0
            lines.append(
                f"- A SpectralGPT route whose advantage over both the path alone and SVM + "
                f"smoothing has a 95% interval above zero: **{'met' if met else 'missed'}** "
                f"({over_path.describe()} over the path, {over_svm.describe()} over the SVM)."
            )
    gap = paired(rows, "gpt_mae_krona_plus", "gpt_mae_full")
    if gap is not None:
        met = gap.low >= -3
        lines.append(
            f"- KronA+ tuned on validation within 3 OA points of full fine-tuning on the MAE "
            f"encoder (the interval's lower end >= -3): **{'met' if met else 'missed'}** "
            f"({gap.describe()})."
        )
    return "\n".join(lines)


def _protocol_text(
    runs: list[dict[str, Any]],
    lr_full: Any,
    lr_adapter: Any,
    lr_head: Any,
    lr_path: Any,
    windows: Any,
) -> str:
    machine = runs[-1]["machine"] if runs else "-"
    epochs = sorted({(r["protocol"], r.get("epochs")) for r in runs if r.get("epochs")})
    mae_steps = sorted({r.get("mae_steps") for r in runs if r.get("mae_steps")})
    seconds = sum(r["fit_s"] for r in runs) / 60
    fmt = ", ".join
    return "\n".join(
        [
            f"Produced by `benchmarks/protocol.py` from {len(runs)} runs in "
            "`benchmarks/results/protocol_runs.jsonl` (rebuild: `python -m benchmarks.protocol "
            "--report-only --results-md docs/results.md`); "
            f"{seconds:.0f} min of training and prediction.",
            "",
            f"- Machine: {machine}.",
            "- Scene: Indian Pines (145 x 145, 200 bands, 16 classes). Each draw (seed) draws its "
            "split once, saves it, and every row of the draw reads that file: the same training, "
            "validation and test pixels for every row.",
            "- Splits: spatially disjoint: 16 x 16 blocks, half of each class's labelled pixels in "
            "test blocks, validation blocks (20% of the training side) carved from the training "
            "side, a 4-pixel buffer so no 9 x 9 patch of a training or validation pixel touches a "
            "test or validation block; per-class: 10% of each class's pixels for training, a "
            "tenth of those for validation.",
            "- **Choices on validation only.** Each row trains its candidates, predicts the whole "
            "scene, and averages each candidate's class log-probabilities over k x k neighbours "
            f"for k in {{{fmt(str(w) for w in windows)}}} (k = 1: none; rows marked per pixel use "
            "k = 1 only). The candidate and k with the best validation OA are chosen, and only "
            "then are the chosen map's test pixels read, once. Deep rows also keep the checkpoint "
            "(epoch) with the best validation OA. The candidates, their validation OA and the "
            "choice are stored with each run.",
            "- Candidates: learning rates "
            f"{fmt(f'{v:g}' for v in lr_full)} (full fine-tuning), "
            f"{fmt(f'{v:g}' for v in lr_adapter)} (adapters), "
            f"{fmt(f'{v:g}' for v in lr_head)} (heads on frozen encoders), "
            f"{fmt(f'{v:g}' for v in lr_path)} (path alone); SVM: C in 1-1000 and gamma by "
            "3-fold cross-validation on the training pixels.",
            "- Deep rows: `configs/experiments/quickstart.yaml` (SpectralGPT width 64, depth 4, "
            "9 x 9 patches resized to 16 x 16, the 64-channel spectral path on the 200-band "
            "spectrum, its own loss, 10x learning rate) built by TerraTorch's "
            "`build_lightning_cli` with overrides only: the draw's `split_file`, "
            f"epochs ({fmt(f'{p}: {e}' for p, e in epochs)}, about 600 steps of 32 patches, "
            "cosine to zero), the candidate's learning rate, `freeze_backbone` for the frozen "
            "rows, the path removed for the rows without it, `peft_config` from "
            "`configs/methods/<method>.yaml` (automatic factor shapes), `backbone_ckpt_path` for "
            "the MAE encoder.",
            "- MAE encoder: pre-trained per draw from "
            "`configs/experiments/pretraining/indian_pines_mae.yaml` (the same encoder size; "
            f"{fmt(str(s) for s in mae_steps)} steps of 64 windows, 75% masking, lr 0.001) with "
            "`leave_out_test` on the disjoint split: no window holds a test pixel (inductive). "
            "On the per-class split the test pixels are scattered over the scene and cannot be "
            "left out: those pre-trained rows are transductive (labels never seen).",
            "- Spectral transformer rows (the issue's moonshot avenue): the same file on "
            "one-pixel patches of all 200 z-scored bands (`band_route: standardize`, "
            "`patch_size: 1`, `backbone_patch_size: 1`, `backbone_num_bands: 200`; 67 spectral "
            "tokens of 3 bands at one position; no spectral path), 20 epochs with the best "
            "validation epoch kept; their MAE encoder is pre-trained per draw from the same "
            "pre-training file on single pixels of the training side (`window_size: 1`, "
            "`leave_out_test`; 1500 steps of 256 pixels, 75% of the spectral tokens masked).",
            "- Path alone: the shipped path's layers (`PixelMLP`, width 64) and a linear head on "
            "each pixel's z-scored 200-band spectrum, no encoder, batches of 32 pixels for the "
            "deep rows' steps, best validation checkpoint.",
        ]
    )


def write_report(runs: list[dict[str, Any]], path: Path) -> None:
    """Write the section into ``path`` (docs/results.md)."""
    from benchmarks.protocol import ROWS

    labels = {name: row.label for name, row in ROWS.items()}
    update_markdown_section(path, SECTION, HEADING, report_body(runs, labels))
