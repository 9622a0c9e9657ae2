"""The efficiency benchmark: a `--quick` run end to end, its numbers and files, its tools."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from markdown_report import image_links, number, section, tables

from benchmarks.docgen.sections import update_markdown_section
from benchmarks.efficiency_measure import (
    Entry,
    median_ratio,
    peak_memory_increases,
    round_robin,
)
from benchmarks.efficiency_report import LABELS
from benchmarks.efficiency_variants import (
    EXPERIMENT,
    PEFT_VARIANTS,
    QUICK_GEOMETRY,
    VARIANTS,
    build_variant,
    model_config,
)
from benchmarks.experiments import load_experiment

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """Run ``efficiency.py --quick`` once into a results file that already has another section."""
    folder = tmp_path_factory.mktemp("efficiency")
    results_md = folder / "results.md"
    results_md.write_text("# Results\n\n## Accuracy\n\nkept as it is\n")
    command = [
        sys.executable,
        "-m",
        "benchmarks.efficiency",
        "--quick",
        "--threads",
        "1",
        "--out",
        str(results_md),
        "--plot",
        str(folder / "img" / "efficiency.png"),
        "--json",
        str(folder / "results.json"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads((folder / "results.json").read_text())
    return {"stdout": done.stdout, "results": results, "folder": folder}


@pytest.mark.slow
def test_quick_run_tables_list_every_variant(quick_run):
    # Size table + one table per precision.
    for name in VARIANTS:
        assert quick_run["stdout"].count(f"| {LABELS[name]} |") == 3, name
    assert set(quick_run["results"]["variants"]) == set(VARIANTS)
    assert quick_run["stdout"].count("| KronA, KronA+, LoKr step <= 1.0x peft LoRA |") == 1


@pytest.mark.slow
def test_quick_run_parameter_counts_match_the_formulas(quick_run):
    g = QUICK_GEOMETRY
    w, r, layers = g.embed_dim, g.rank, 2 * g.depth  # attn.q and attn.v of every block
    block = 4 * w + 4 * (w * w + w) + (w * 4 * w + 4 * w) + (4 * w * w + w)
    groups, grid = g.bands // 3, (g.img_size // 8) ** 2
    backbone = (w * 3 * 8 * 8 + w) + grid * w + groups * w + g.depth * block + 2 * w
    head = w * g.head_dim + g.head_dim + g.head_dim * g.classes + g.classes
    k = math.isqrt(w)  # quick width is a square: Kronecker factors k x k
    adapters = {
        "LORA": layers * 2 * r * w,
        "LORA_PLUS": layers * 2 * r * w,
        "KRONA": layers * 2 * k * k,
        "KRONA_PLUS": layers * 2 * k * k,
        "LOKR": layers * (k * k + 2 * k * r),
        "peft LoRA": layers * 2 * r * w,
        "peft LoKr": layers * (k * k + 2 * k * r),
        "floor": 0,
        "full": backbone,
    }
    results = quick_run["results"]
    assert results["backbone_parameters"] == backbone
    assert results["head_parameters"] == head
    for name, count in adapters.items():
        row = results["variants"][name]
        assert row["trainable"] == count + head, name
        assert row["percent"] == pytest.approx(100 * (count + head) / backbone)


@pytest.mark.slow
def test_quick_run_numbers_are_sane(quick_run):
    results = quick_run["results"]
    rows = results["variants"]
    for name, row in rows.items():
        for precision in ("float32", "bf16"):
            cell = row[precision]
            for key, value in cell.items():
                assert math.isfinite(value) and value > 0, (name, precision, key, value)
            assert (name in PEFT_VARIANTS) == ("merged_vs_plain" in cell)
    for precision in ("float32", "bf16"):
        assert rows["full"][precision]["step_vs_full"] == 1.0
        assert rows["floor"][precision]["step_vs_floor"] == 1.0
        # Full fine-tuning alone keeps gradients and two AdamW moments of every weight.
        state = 3 * 4 * results["backbone_parameters"] / 2**20
        for name in ["floor", *PEFT_VARIANTS]:
            extra = rows["full"][precision]["memory_mib"] - rows[name][precision]["memory_mib"]
            assert extra > 0.5 * state, (name, precision, extra, state)
    # float32 files: 4 bytes per stored number plus a header (ours: plus JSON metadata).
    stored = results["backbone_parameters"] + results["head_parameters"]
    assert 4 * stored < rows["full"]["file_bytes"] < 4 * stored + 2**16
    for name in PEFT_VARIANTS:
        assert 4 * rows[name]["trainable"] < rows[name]["file_bytes"] < rows["full"]["file_bytes"]
    targets = results["targets"]
    assert len(targets) == 5
    assert all(isinstance(t[p]["met"], bool) for t in targets for p in ("float32", "bf16"))


@pytest.mark.slow
def test_quick_run_writes_its_section_and_plot(quick_run):
    folder = quick_run["folder"]
    text = (folder / "results.md").read_text()
    assert text.startswith("# Results\n\n## Accuracy\n\nkept as it is\n")
    assert text.count("## Efficiency") == 1
    assert text.count("<!-- efficiency:start -->") == text.count("<!-- efficiency:end -->") == 1
    body = section(text, "efficiency")
    assert image_links(body) == ["img/efficiency.png"]
    assert (folder / "img" / "efficiency.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    results = quick_run["results"]
    assert results["command"].split()[:6] == [
        "python", "-m", "benchmarks.efficiency", "--quick", "--threads", "1"
    ]  # fmt: skip
    # The size table holds each variant's trainable parameters of the JSON.
    header, rows = tables(body)[0]
    assert header[:2] == ["method", "trainable parameters"]
    trainable = {row[0]: number(row[1]) for row in rows}
    assert trainable == {LABELS[n]: v["trainable"] for n, v in results["variants"].items()}


def test_markdown_section_is_replaced_in_place(tmp_path):
    path = tmp_path / "docs" / "results.md"
    update_markdown_section(path, "efficiency", "## Efficiency", "first")
    assert path.read_text() == (
        "# Results\n\n<!-- efficiency:start -->\n## Efficiency\n\nfirst\n<!-- efficiency:end -->\n"
    )
    path.write_text(path.read_text() + "\n## Accuracy\n\nother team\n")
    update_markdown_section(path, "efficiency", "## Efficiency", "second")
    text = path.read_text()
    assert "first" not in text and text.count("second") == 1
    assert text.endswith("<!-- efficiency:end -->\n\n## Accuracy\n\nother team\n")
    assert [p.name for p in path.parent.iterdir()] == ["results.md"]  # no temporary left


def test_round_robin_rotates_and_pairs_rounds():
    order: list[str] = []
    entries = {key: Entry(lambda key=key: order.append(key)) for key in "abc"}
    samples = round_robin(entries, rounds=3, warmup=1, device=torch.device("cpu"))
    assert order == list("abcbcacababc")
    assert {key: len(times) for key, times in samples.items()} == {"a": 3, "b": 3, "c": 3}
    assert median_ratio([2.0, 4.0, 9.0], [1.0, 1.0, 3.0]) == 3.0
    with pytest.raises(ValueError, match="equally long"):
        median_ratio([1.0], [1.0, 2.0])


def test_peak_memory_increases_see_what_each_step_allocates():
    mib = 2**20

    def allocate(size: int):
        return lambda built: torch.ones(size // 4).add_(built.sum())  # `size` bytes alive at once

    # What a long test run leaves behind: freed, still resident heap (and glibc's mmap threshold
    # raised), where a child's 32 MiB would land without adding to its peak unless trimmed.
    for size, count in ((30, 6), (30, 6), (30, 6), (20, 8)):
        churn = [torch.ones(size * mib // 4) for _ in range(count)]
        del churn
    increases = peak_memory_increases(
        lambda: torch.zeros(16),
        {"tiny": allocate(4096), "small": allocate(32 * mib), "large": allocate(96 * mib)},
        torch.device("cpu"),
    )
    # A fresh child also pages in the code of the ops it calls first (10-20 MiB, more in a large
    # test process): the same for every step, so "tiny" (the same ops on 4 kB) measures it.
    assert 31 * mib < increases["small"] - increases["tiny"] < 33 * mib
    assert 63 * mib < increases["large"] - increases["small"] < 65 * mib


def test_cuda_without_a_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    from benchmarks.efficiency import main

    with pytest.raises(SystemExit, match="no CUDA device is available; use --device cpu"):
        main(["--device", "cuda"])


@pytest.mark.cuda
@pytest.mark.slow
def test_quick_run_on_cuda(tmp_path):
    out = tmp_path / "results.json"
    command = [sys.executable, "-m", "benchmarks.efficiency", "--quick", "--device", "cuda"]
    done = subprocess.run(
        [*command, "--json", str(out)], capture_output=True, text=True, timeout=600, cwd=REPO_ROOT
    )
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads(out.read_text())
    assert results["device"] == "cuda"
    for row in results["variants"].values():
        assert row["float32"]["step_ms"] > 0 and row["bf16"]["memory_mib"] > 0


def test_loha_is_an_efficiency_benchmark_variant():
    assert "LOHA" in VARIANTS and "LOHA" in PEFT_VARIANTS and LABELS["LOHA"] == "LoHa (ours)"
    variant = build_variant("LOHA", QUICK_GEOMETRY, torch.device("cpu"))
    g = QUICK_GEOMETRY
    head = g.embed_dim * g.head_dim + g.head_dim + g.head_dim * g.classes + g.classes
    assert variant.trainable_parameters() == 2 * g.depth * 4 * g.rank * g.embed_dim + head
    variant.train_step(bf16=False)
    with variant.merged():
        merged = variant.predict(bf16=False)
    torch.testing.assert_close(merged, variant.predict(bf16=False), rtol=1e-4, atol=1e-5)


def test_variants_are_the_shipped_experiment_with_the_geometrys_overrides():
    """The timed model is configs/experiments/paper/spectralgpt_b/full.yaml + overrides only."""
    geometry = QUICK_GEOMETRY
    shipped = load_experiment(EXPERIMENT)["model"]["init_args"]
    config = model_config(geometry, "LORA")["model"]["init_args"]
    overridden = {
        "backbone_pretrained": False,
        "backbone_embed_dim": geometry.embed_dim,
        "backbone_depth": geometry.depth,
        "backbone_num_heads": geometry.num_heads,
        "backbone_patch_size": geometry.patch_size,
        "backbone_num_bands": geometry.bands,
        "backbone_img_size": geometry.img_size,
        "head_dim_list": [geometry.head_dim],
        "num_classes": geometry.classes,
    }
    args = config.pop("model_args")
    peft_config = args.pop("peft_config")
    assert args == {**shipped.pop("model_args"), **overridden}
    assert config == shipped  # the task's own settings are the file's
    # The method's shipped file, at the geometry's rank.
    assert peft_config["method"] == "LORA" and peft_config["backend"] == "plugin"
    assert peft_config["peft_config_kwargs"] == {
        "target_modules": ["attn.q", "attn.v"],
        "r": geometry.rank,
        "alpha": geometry.rank,
    }
    model = build_variant("LORA", geometry, torch.device("cpu")).model
    assert type(model).__name__ == "ScalarOutputModel"
    layers = [type(m).__name__ for m in model.head.modules() if not list(m.children())]
    assert layers == ["Linear", "ReLU", "Dropout", "Linear"]  # the paper's MLP head
