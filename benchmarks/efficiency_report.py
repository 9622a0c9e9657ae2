"""Tables, plot and Markdown section of the efficiency benchmark, from its results dict.

The results dict (also written as JSON by ``efficiency.py --json``) holds ``variants``:
``{name: {"trainable", "percent", "file_bytes", "float32": {...}, "bf16": {...}}}`` where each
precision has ``step_ms``, ``step_vs_{full,floor,peft_lora,peft_lokr}``, ``memory_mib``,
``memory_vs_full`` and, for adapter variants, ``{unmerged,merged}_ms`` and
``{unmerged,merged}_vs_plain``; plus ``plain_ms`` per precision, ``targets``, ``machine``,
``geometry``, ``command`` and ``seconds``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from terratorch_hsi_peft.adapters import registered_methods
from terratorch_hsi_peft.utils.download import atomic_write

__all__ = ["LABELS", "PRECISIONS", "markdown", "plot"]

PRECISIONS = ("float32", "bf16")
#: Display names of the variants.
LABELS = {
    "full": "full fine-tuning",
    "floor": "floor: frozen, head only",
    **{method.name: f"{method.label} (ours)" for method in registered_methods()},
    "peft LoRA": "LoRA (HF peft)",
    "peft LoKr": "LoKr (HF peft)",
}


def markdown(results: dict[str, Any], plot_link: str | None = None) -> str:
    """The efficiency section's body: setup, three tables, target verdicts and the plot."""
    variants = results["variants"]
    lines = [
        f"Command: `{results['command']}`",
        "",
        f"Machine: {results['machine']}.",
        "",
        f"Geometry: {results['geometry']}. {results['rounds']} timed rounds after "
        f"{results['warmup']} warm-up round(s); whole run {results['seconds'] / 60:.1f} min.",
        "",
        "### Size",
        "",
        "| method | trainable parameters | % of backbone | file per task |",
        "|---|---:|---:|---:|",
    ]
    for name, row in variants.items():
        lines.append(
            f"| {LABELS[name]} | {row['trainable']:,} | {row['percent']:.4g} % | "
            f"{_size(row['file_bytes'])} |"
        )
    lines += [
        "",
        f"Backbone: {results['backbone_parameters']:,} parameters. Trainable parameters include "
        f"the head ({results['head_parameters']:,}); the file per task is the whole model (full), "
        "the head (floor), `save_adapters(model, include=['head'])` (ours, with its metadata) "
        "or peft's adapter state dict plus the head (safetensors).",
    ]
    for precision in PRECISIONS:
        title = "float32" if precision == "float32" else "bf16 autocast"
        lines += [
            "",
            f"### Training step and inference, {title}",
            "",
            "| method | step ms | x full | x floor | x peft LoRA | x peft LoKr | peak MiB "
            "| x full | unmerged x plain | merged x plain |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, row in variants.items():
            cell = row[precision]
            lines.append(
                f"| {LABELS[name]} | {cell['step_ms']:.1f} | {cell['step_vs_full']:.3f} | "
                f"{cell['step_vs_floor']:.3f} | {cell['step_vs_peft_lora']:.3f} | "
                f"{cell['step_vs_peft_lokr']:.3f} | {cell['memory_mib']:.1f} | "
                f"{cell['memory_vs_full']:.3f} | {_ratio(cell.get('unmerged_vs_plain'))} | "
                f"{_ratio(cell.get('merged_vs_plain'))} |"
            )
        lines += ["", f"Plain backbone inference: {results['plain_ms'][precision]:.1f} ms."]
    lines += [
        "",
        "Step: median wall time (CUDA events on a GPU) of one AdamW step (forward, "
        "cross-entropy, backward, update) on the batch. Ratios: medians of per-round ratios, "
        "every variant timed once per round in rotating order. Peak MiB: memory a training step "
        "adds on top of the built model and batch (CPU: peak RSS during two steps minus the RSS "
        "before them, in a forked single-threaded process per variant and precision; CUDA: "
        "max_memory_allocated). "
        "Inference: forward in eval mode without autograd, adapters unmerged or merged into the "
        "weights, against the same model without adapters.",
        "",
        "### Targets",
        "",
        "| target | " + " | ".join(PRECISIONS) + " |",
        "|---|" + "---|" * len(PRECISIONS),
    ]
    for target in results["targets"]:
        cells = [
            f"{'met' if v['met'] else '**missed**'} ({v['worst']}: {v['value']:.3f})"
            for v in (target[p] for p in PRECISIONS)
        ]
        lines.append(f"| {target['target']} | " + " | ".join(cells) + " |")
    if plot_link is not None:
        lines += ["", f"![Step time and peak memory per method]({plot_link})"]
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """Bar charts of step time and peak step memory per method and precision, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["variants"])
    labels = [LABELS[n] for n in names]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), constrained_layout=True)
    width = 0.4
    for axis, key, title in (
        (axes[0], "step_ms", "Training step (ms, median)"),
        (axes[1], "memory_mib", "Peak memory added by training (MiB)"),
    ):
        for offset, precision in enumerate(PRECISIONS):
            values = [results["variants"][n][precision][key] for n in names]
            positions = [i + (offset - 0.5) * width for i in range(len(names))]
            axis.barh(positions, values, height=width, label=precision)
        axis.set_yticks(range(len(names)), labels)
        axis.invert_yaxis()
        axis.set_title(title)
        axis.grid(axis="x", alpha=0.3)
        axis.legend()
    fig.suptitle(f"SpectralGPT {results['geometry_short']} on {results['device']}")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        f.write(buffer.getvalue())


def _size(num_bytes: int) -> str:
    if num_bytes >= 2**20:
        return f"{num_bytes / 2**20:.2f} MiB"
    return f"{num_bytes / 2**10:.1f} KiB"


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"
