"""Efficiency benchmark: every PEFT method against full fine-tuning, the floor and HF ``peft``.

On the SpectralGPT-B geometry (12 blocks, width 768, 12 bands at 32x32 -> 64 tokens, batch 8)
it measures, for full fine-tuning, the frozen-backbone floor, every method registered in this
library (KRONA, KRONA_PLUS, LOKR, LORA, LORA_PLUS, ...) and Hugging Face peft's LoRA and LoKr on
the same targets (``attn.q``, ``attn.v``): trainable parameters, file size per task, median
training-step time, the peak memory a training step adds (each variant in its own process on CPU),
and unmerged / merged inference time against the plain backbone; everything in float32 and under
bf16 autocast.

Usage::

    python -m benchmarks.efficiency                      # full geometry, CPU
    python -m benchmarks.efficiency --quick              # tiny geometry, for CI
    python -m benchmarks.efficiency --device cuda        # time on a GPU (CUDA events)
    python -m benchmarks.efficiency --threads 1 --out docs/results.md \\
        --plot docs/img/efficiency.png --json efficiency.json

See efficiency_measure.py for how time and memory are measured on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.docgen.sections import update_markdown_section
from benchmarks.efficiency_measure import Entry, median_ratio, peak_memory_increases, round_robin
from benchmarks.efficiency_report import PRECISIONS, markdown, plot
from benchmarks.efficiency_variants import (
    FULL_GEOMETRY,
    PEFT_VARIANTS,
    QUICK_GEOMETRY,
    VARIANTS,
    build_variant,
)
from benchmarks.machine import machine_description

#: (description, variants, results key, upper limit): the issue's targets for this CPU.
TARGETS = [
    ("KronA, KronA+, LoKr step <= 1.0x peft LoRA", ["KRONA", "KRONA_PLUS", "LOKR"],
     "step_vs_peft_lora", 1.0),
    ("KronA, KronA+, LoKr step <= 1.05x floor", ["KRONA", "KRONA_PLUS", "LOKR"],
     "step_vs_floor", 1.05),
    ("LoKr step <= 0.9x peft LoKr", ["LOKR"], "step_vs_peft_lokr", 0.9),
    ("peak memory of every PEFT method <= 0.7x full", PEFT_VARIANTS, "memory_vs_full", 0.7),
    ("merged inference <= 1.02x plain backbone", PEFT_VARIANTS, "merged_vs_plain", 1.02),
]  # fmt: skip
MEMORY_STEPS = 2  # the first step creates AdamW's state, the second runs with it


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print the tables; write the requested files. Returns the results."""
    argv = sys.argv[1:] if argv is None else argv
    args = _parse(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            "--device cuda was given but no CUDA device is available; use --device cpu."
        )
    geometry = QUICK_GEOMETRY if args.quick else FULL_GEOMETRY
    rounds = args.repeats if args.repeats is not None else (2 if args.quick else 5)
    began = time.perf_counter()
    machine = machine_description(device)
    _log(f"{machine}\n{geometry.describe()}")

    _log("peak memory, one process per variant and precision ...")
    memory = {}
    for name in VARIANTS:
        steps = {
            precision: lambda v, bf16=(precision == "bf16"): [
                v.train_step(bf16) for _ in range(MEMORY_STEPS)
            ]
            for precision in PRECISIONS
        }
        increases = peak_memory_increases(
            lambda name=name: build_variant(name, geometry, device), steps, device
        )
        memory.update({(name, precision): value for precision, value in increases.items()})

    _log("building every variant ...")
    variants = {name: build_variant(name, geometry, device) for name in VARIANTS}
    entries: dict[tuple, Entry] = {}
    for precision in PRECISIONS:
        bf16 = precision == "bf16"
        for name, variant in variants.items():
            entries[("train", name, precision)] = Entry(lambda v=variant, b=bf16: v.train_step(b))
        plain = variants["floor"]
        entries[("plain", precision)] = Entry(lambda v=plain, b=bf16: v.predict(b))
        for name in PEFT_VARIANTS:
            variant = variants[name]
            call = lambda v=variant, b=bf16: v.predict(b)  # noqa: E731
            entries[("unmerged", name, precision)] = Entry(call)
            entries[("merged", name, precision)] = Entry(call, context=variant.merged)
    _log(f"timing {len(entries)} calls per round ...")
    samples = round_robin(entries, rounds, args.warmup, device, progress=_log)

    results = _assemble(variants, memory, samples)
    results.update(
        command=shlex.join(["python", "-m", "benchmarks.efficiency", *argv]),
        machine=machine,
        device=str(device),
        geometry=geometry.describe(),
        geometry_short=f"{geometry.depth}x{geometry.embed_dim}, {geometry.tokens} tokens, "
        f"batch {geometry.batch}",
        rounds=rounds,
        warmup=args.warmup,
        seconds=time.perf_counter() - began,
    )
    _write(results, args)
    return results


def _assemble(variants: dict, memory: dict, samples: dict) -> dict[str, Any]:
    backbone = variants["full"].backbone_parameters
    head = sum(p.numel() for p in variants["full"].model.head.parameters())
    rows: dict[str, dict[str, Any]] = {}
    for name, variant in variants.items():
        row: dict[str, Any] = {
            "trainable": variant.trainable_parameters(),
            "file_bytes": variant.file_bytes(),
        }
        row["percent"] = 100.0 * row["trainable"] / backbone
        for precision in PRECISIONS:
            step = samples[("train", name, precision)]
            cell = {"step_ms": 1e3 * statistics.median(step)}
            for reference, key in (
                ("full", "full"),
                ("floor", "floor"),
                ("peft LoRA", "peft_lora"),
                ("peft LoKr", "peft_lokr"),
            ):
                cell[f"step_vs_{key}"] = median_ratio(
                    step, samples[("train", reference, precision)]
                )
            cell["memory_mib"] = memory[(name, precision)] / 2**20
            cell["memory_vs_full"] = memory[(name, precision)] / memory[("full", precision)]
            if name in PEFT_VARIANTS:
                plain = samples[("plain", precision)]
                for mode in ("unmerged", "merged"):
                    timed = samples[(mode, name, precision)]
                    cell[f"{mode}_ms"] = 1e3 * statistics.median(timed)
                    cell[f"{mode}_vs_plain"] = median_ratio(timed, plain)
            row[precision] = cell
        rows[name] = row
    plain_ms = {p: 1e3 * statistics.median(samples[("plain", p)]) for p in PRECISIONS}
    return {
        "variants": rows,
        "plain_ms": plain_ms,
        "targets": _verdicts(rows),
        "backbone_parameters": backbone,
        "head_parameters": head,
    }


def _verdicts(rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    verdicts = []
    for description, names, key, limit in TARGETS:
        verdict: dict[str, Any] = {"target": description, "limit": limit}
        for precision in PRECISIONS:
            worst = max(names, key=lambda n: rows[n][precision][key])
            value = rows[worst][precision][key]
            verdict[precision] = {"worst": worst, "value": value, "met": value <= limit}
        verdicts.append(verdict)
    return verdicts


def _write(results: dict[str, Any], args: argparse.Namespace) -> None:
    plot_link = None
    if args.plot is not None:
        plot(results, args.plot)
        if args.out is not None:
            link = os.path.relpath(args.plot.resolve(), args.out.resolve().parent)
            plot_link = Path(link).as_posix()
    body = markdown(results, plot_link)
    print(body)
    if args.out is not None:
        update_markdown_section(args.out, "efficiency", "## Efficiency", body)
    if args.json is not None:
        from terratorch_hsi_peft.utils.download import atomic_write

        args.json.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(args.json, "w") as f:
            json.dump(results, f, indent=1)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny geometry and 2 rounds (CI)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:index] (default: cpu)")
    parser.add_argument(
        "--repeats", type=_positive, default=None, help="timed rounds (default 5; 2 with --quick)"
    )
    parser.add_argument("--warmup", type=_positive, default=1, help="untimed rounds first")
    parser.add_argument(
        "--threads", type=_positive, default=None, help="torch CPU threads (default: torch's)"
    )
    parser.add_argument(
        "--out", type=Path, help="Markdown file whose efficiency section to replace"
    )
    parser.add_argument("--plot", type=Path, help="PNG file for the step-time and memory plot")
    parser.add_argument("--json", type=Path, help="JSON file for the raw results")
    return parser.parse_args(argv)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _log(message: str) -> None:
    print(f"[efficiency] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
