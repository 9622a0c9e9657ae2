"""The figures the docs state about the shipped configs, computed from the configs themselves.

- ``paper-sizes`` (docs/reproduce_paper.md): for each of the paper's methods, SpectralGPT-B
  built as ``configs/paper/spectralgpt_b.yaml`` with the method's file of ``configs/methods/``
  builds it (``backbone_pretrained`` off: sizes do not depend on the weights), its trainable
  parameters, and the file a run leaves: ``AdapterCheckpoint``'s
  ``adapters.safetensors`` (measured by writing it), or for full fine-tuning the float32 weights
  and the weights plus AdamW's two moments (what ``last.ckpt`` holds, 12 bytes per parameter,
  computed; Lightning adds a few kB of metadata).
- The quickstart's training (``quickstart_figures``): training and test pixels of its split and
  its optimizer steps (batches per epoch x epochs), from its configs and the real scene.

    python -m benchmarks.docgen.figures --out docs/reproduce_paper.md

``tests/test_doc_figures.py`` recomputes every figure and compares it with the docs.
"""

from __future__ import annotations

import argparse
import copy
import math
import tempfile
from pathlib import Path
from typing import Any

import yaml

from benchmarks.docgen.sections import update_markdown_section

REPO_ROOT = Path(__file__).resolve().parents[2]

PAPER_METHODS = ("full", "lora", "lora_plus", "krona", "krona_plus", "lokr")
QUICKSTART_CONFIGS = ("base/trainer.yaml", "data/indian_pines_patch.yaml", "quickstart.yaml")
SECTION = "paper-sizes"
HEADING = "## What a run stores"


def paper_model_args(method: str) -> dict[str, Any]:
    """``model_args`` of ``configs/paper/spectralgpt_b.yaml`` with the ``peft_config`` of
    ``configs/methods/<method>.yaml`` (none for ``full``), without weight download."""
    path = REPO_ROOT / "configs" / "paper" / "spectralgpt_b.yaml"
    config = yaml.safe_load(path.read_text())
    model_args = copy.deepcopy(config["model"]["init_args"]["model_args"])
    model_args["backbone_pretrained"] = False
    if method != "full":
        method_file = REPO_ROOT / "configs" / "methods" / f"{method}.yaml"
        model_args["peft_config"] = yaml.safe_load(method_file.read_text())
    return model_args


def paper_sizes() -> list[dict[str, Any]]:
    """Per paper method: parameter counts and stored bytes (see the module docstring)."""
    from lightning.pytorch import seed_everything

    from terratorch_hsi_peft.models import PEFTEncoderDecoderFactory
    from terratorch_hsi_peft.models.adapter_file import save_model_adapters

    rows = []
    for method in PAPER_METHODS:
        # As a run with `seed_everything: 0` does: the file records "random init, seed 0", so its
        # size does not depend on what seeded this process before.
        seed_everything(0, verbose=False)
        model = PEFTEncoderDecoderFactory().build_model(
            "classification", **paper_model_args(method)
        )
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        row: dict[str, Any] = {"method": method, "trainable": trainable}
        if method == "full":
            row["file"] = "last.ckpt"
            row["weights_bytes"] = 4 * trainable
            row["bytes"] = 12 * trainable  # weights + AdamW's exp_avg and exp_avg_sq
        else:
            adapters = sum(
                p.numel()
                for name, p in model.encoder.named_parameters()
                if p.requires_grad and ("lora_" in name or "krona_" in name or "lokr_" in name)
            )
            row["adapters"] = adapters
            with tempfile.TemporaryDirectory() as folder:
                save_model_adapters(model, Path(folder) / "adapters.safetensors")
                row["file"] = "adapters.safetensors"
                row["bytes"] = sum(f.stat().st_size for f in Path(folder).iterdir())
        rows.append(row)
        del model
    return rows


def encoder_parameters() -> int:
    """Parameters of the paper configs' SpectralGPT-B encoder (12 bands, 32 x 32, no adapters)."""
    from terratorch_hsi_peft.models import PEFTEncoderDecoderFactory

    args = paper_model_args("full")
    model = PEFTEncoderDecoderFactory().build_model("classification", **args)
    return sum(p.numel() for p in model.encoder.parameters())


def megabytes(count: int) -> str:
    """Bytes in MB (10^6) or GB (10^9), 3 significant digits."""
    if count >= 1e9:
        return f"{count / 1e9:.3g} GB"
    return f"{count / 1e6:.3g} MB"


def paper_sizes_markdown(rows: list[dict[str, Any]]) -> str:
    """The generated section of docs/reproduce_paper.md."""
    lines = [
        "Computed by `python -m benchmarks.docgen.figures --out docs/reproduce_paper.md` from the "
        "paper's task file with each method file (SpectralGPT-B, 12 bands at 32 x 32, the MLP "
        "head 768 -> 256 -> 16); `tests/test_doc_figures.py` checks it.",
        "",
        "| method | trainable parameters | of which adapters | file a run leaves | size |",
        "|---|---:|---:|---|---:|",
    ]
    for row in rows:
        if row["method"] == "full":
            size = (
                f"{megabytes(row['bytes'])} ({megabytes(row['weights_bytes'])} of weights + "
                "AdamW's two moments)"
            )
            adapters = "-"
        else:
            size = f"{megabytes(row['bytes'])} ({row['bytes']:,} bytes)"
            adapters = f"{row['adapters']:,}"
        lines.append(
            f"| {row['method']} | {row['trainable']:,} | {adapters} | "
            f"`checkpoints/{row['file']}` | {size} |"
        )
    head = next(row["trainable"] - row["adapters"] for row in rows if row["method"] != "full")
    lines += [
        "",
        "The adapter file holds the adapters and every other trained tensor (the MLP head's "
        f"{head:,} parameters dominate it). Full fine-tuning's `last.ckpt` holds the float32 "
        "weights and AdamW's two moments of each (12 bytes per parameter), plus less than 1 MB "
        "(the split, the band route and Lightning's metadata).",
    ]
    return "\n".join(lines)


def quickstart_figures(data_root: Path) -> dict[str, int]:
    """Split sizes and optimizer steps of the quickstart, from its configs and the scene."""
    from terratorch_hsi_peft.datamodules import HyperspectralPatchDataModule

    configs = [yaml.safe_load((REPO_ROOT / "configs" / c).read_text()) for c in QUICKSTART_CONFIGS]
    data_args: dict[str, Any] = {}
    trainer: dict[str, Any] = {}
    for config in configs:
        data_args.update(config.get("data", {}).get("init_args", {}))
        trainer.update(config.get("trainer", {}))
    data_args["root"] = str(data_root)
    datamodule = HyperspectralPatchDataModule(**data_args)
    datamodule.setup("fit")
    batches = len(datamodule.train_dataloader())
    split = datamodule.split
    return {
        "train_pixels": len(split.train),
        "test_pixels": len(split.test),
        "batch_size": data_args["batch_size"],
        "batches_per_epoch": batches,
        "epochs": trainer["max_epochs"],
        "steps": batches * trainer["max_epochs"],
        "expected_batches": math.ceil(len(split.train) / data_args["batch_size"]),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="Markdown file whose section to replace")
    args = parser.parse_args(argv)
    body = paper_sizes_markdown(paper_sizes())
    print(body)
    if args.out is not None:
        update_markdown_section(args.out, SECTION, HEADING, body)


if __name__ == "__main__":
    main()
