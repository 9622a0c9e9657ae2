"""Every method on a pretrained encoder: MAE pre-training, then fine-tuning on Indian Pines.

Three encoders of one small SpectralGPT geometry (the quickstart's: width 64, 4 blocks, 2 heads,
4x4x3 tubelets, 9x9 windows resized to 16x16) are fine-tuned with every method:

- ``random``: random initialisation (the reference of ``benchmarks/accuracy.py``);
- ``in_domain``: the plugin's masked autoencoder (``spectralgpt_mae_vit_base`` sized down),
  pre-trained on Indian Pines' own windows. **Transductive**: pre-training sees every pixel of the
  scene, test pixels included, never a label; its PCA route (12 whitened components) is fitted
  on all the scene's pixels, without labels, and the ``random`` rows use that same route, so the
  two differ only in the encoder weights;
- ``cross_sensor``: the same MAE pre-trained on Jasper Ridge and Samson only, both simulated as
  SpectralGPT's 12 Sentinel-2 bands (``sentinel2`` route); Indian Pines is never seen before
  fine-tuning, which feeds it through the same route (fitted on training pixels);
- ``random_s2``: random initialisation through the ``sentinel2`` route, the reference of
  ``cross_sensor``.

Methods: full fine-tuning (``FULL``), a linear probe (``LINEAR_PROBE``: frozen encoder, one
Linear on the mean token), ``LORA``, ``LORA_PLUS``, ``KRONA``, ``KRONA_PLUS``, ``LOKR`` (Q and V of
every block, as ``benchmarks/accuracy.py``), next to an RBF SVM and a random forest on the same
training pixels, on both split protocols, several seeds.

CPU budget (one torch thread): each pre-training is ``--pretrain-steps`` (1,500) MAE steps of 64
windows, at most ~12 min (measured at nice 19 on 2 shared cores: 7.7 min in-domain, 4.2 min
cross-sensor); each fine-tune is ``--steps`` (300) steps of 64 patches, 0.5-2 min there with its
test pass. The grid is 4 encoders x 7 methods x 2 splits x 3 seeds = 168 fine-tunes (seed 0 of
both splits, 56 fine-tunes and both pre-trainings, took about 70 min there; seeds 1 and 2, two
processes, about 130 min on a machine shared with other jobs).

Resumable: every finished run is appended to ``--runs`` (JSONL) and skipped when the script is
started again with the same file; pre-trained encoders are kept in ``--work-dir`` and reused.
Runs are ordered so the most informative come first: per-class split, seed 0, {in-domain,
random}; then cross-sensor; then the spatially disjoint split; then the other seeds.

    nohup nice -n 19 python -m benchmarks.pretrain_then_tune --results-md docs/results.md > log &
    python -m benchmarks.pretrain_then_tune --report-only --results-md docs/results.md
    python -m benchmarks.pretrain_then_tune --quick --work-dir /tmp/q --runs /tmp/q/runs.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import scipy.io
import torch
from matplotlib.figure import Figure
from terratorch.tasks import ClassificationTask

from benchmarks.accuracy import (
    CLASSIC,
    QUICK_TEST_BATCHES,
    SPLITS,
    Run,
    classic_run,
    draw_split,
    forest_trees,
    log,
    make_trainer,
    scores,
)
from benchmarks.docgen.sections import update_markdown_section
from benchmarks.hsi_models import (
    METHODS,
    QUICK,
    Geometry,
    build_task,
    classification_model_args,
    machine_description,
    predict_patches,
    quiet_libraries,
    trainable_parameters,
)
from terratorch_hsi_peft.datamodules import (
    IGNORE_INDEX,
    HyperspectralPatchDataModule,
    HyperspectralPretrainDataModule,
)
from terratorch_hsi_peft.datasets import HyperspectralScene, IndianPines
from terratorch_hsi_peft.datasets.wavelengths import aviris_wavelengths
from terratorch_hsi_peft.pretraining import export_encoder, spectralgpt_mae_vit_base
from terratorch_hsi_peft.transforms import BandRoute
from terratorch_hsi_peft.utils import atomic_write

#: The quickstart's encoder (configs/quickstart.yaml), with an MLP head as the accuracy grid.
GEOMETRY = Geometry(embed_dim=64, depth=4, num_heads=2, img_size=16, head_dim=64, patch_size=4)
QUICK_GEOMETRY = replace(QUICK, patch_size=4)
#: Fine-tuning methods: the accuracy grid's plus a linear probe (frozen encoder, Linear head).
ALL_METHODS = ["FULL", "LINEAR_PROBE", *[m for m in METHODS if m != "FULL"]]
#: Encoder name -> (pre-training, band route of fine-tuning).
ENCODERS = {
    "random": (None, "pca"),
    "in_domain": ("indian_pines", "pca"),
    "cross_sensor": ("jasper_samson", "sentinel2"),
    "random_s2": (None, "sentinel2"),
}
#: Encoders in the order their runs are most informative (pre-trained, then its reference).
PRIORITY = ["in_domain", "random", "cross_sensor", "random_s2"]
ENCODER_TITLES = {
    "random": "random init (PCA)",
    "in_domain": "in-domain MAE (PCA, transductive)",
    "cross_sensor": "cross-sensor MAE (Jasper+Samson, S2 bands)",
    "random_s2": "random init (S2 bands)",
}
#: MAE settings: the official recipe's objective, sized for this encoder.
MAE_ARGS = {
    "decoder_embed_dim": 64,
    "decoder_depth": 2,
    "decoder_num_heads": 2,
    "mask_ratio": 0.75,
    "norm_pix_loss": False,
}
PRETRAIN_WINDOW = 9  # = the fine-tuning patch; resized to img_size, as the patch datamodule does
PRETRAIN_STRIDE = 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-root",
        type=Path,
        default=Path("../shared/data"),
        help="folder holding indian_pines/, jasper_ridge/, samson/",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS))
    parser.add_argument("--methods", nargs="+", choices=ALL_METHODS, default=ALL_METHODS)
    parser.add_argument("--encoders", nargs="+", choices=list(ENCODERS), default=list(ENCODERS))
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per fine-tune")
    parser.add_argument("--pretrain-steps", type=int, default=1500, help="MAE optimizer steps")
    parser.add_argument("--pretrain-batch-size", type=int, default=64)
    parser.add_argument("--pretrain-lr", type=float, default=1e-3, help="MAE AdamW peak lr")
    parser.add_argument("--lr", type=float, default=1e-3, help="fine-tuning AdamW lr")
    parser.add_argument(
        "--probe-lr",
        type=float,
        default=3e-2,
        help="AdamW lr of LINEAR_PROBE: a lone linear head on frozen features needs larger steps",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path("outputs/pretrain_then_tune"),
        help="pre-trained encoders are kept (and reused) here",
    )
    parser.add_argument(
        "--runs", type=Path, help="JSONL of finished runs (default: <work-dir>/runs.jsonl)"
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: write the table/plot/section from --runs",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="CI smoke run: tiny encoder, seed 0, per-class split, 2 steps",
    )
    parser.add_argument("--results-md", type=Path, help="Markdown file to write the section into")
    parser.add_argument(
        "--img-dir", type=Path, help="folder of the plot (default: img/ beside --results-md)"
    )
    args = parser.parse_args(argv)
    for name in ("steps", "pretrain_steps", "batch_size", "pretrain_batch_size", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1.")
    for folder in ("indian_pines", "jasper_ridge", "samson"):
        if not (args.data_root / folder).is_dir():
            parser.error(
                f"{args.data_root / folder} does not exist; point --data-root at the folder "
                "holding indian_pines/, jasper_ridge/ and samson/ (see ../shared/data/README.md)."
            )
    if args.quick:
        args.seeds, args.steps, args.pretrain_steps = args.seeds[:1], 2, 2
        args.splits = args.splits[:1]
    if args.runs is None:
        args.runs = args.work_dir / "runs.jsonl"
    if args.img_dir is None and args.results_md is not None:
        args.img_dir = args.results_md.parent / "img"
    return args


# -- bookkeeping ------------------------------------------------------------------------------


def run_key(encoder: str, method: str, split: str, seed: int) -> str:
    """The identity of one run in the JSONL file."""
    return f"{encoder}|{method}|{split}|{seed}"


def read_runs(path: Path) -> list[dict[str, Any]]:
    """Finished runs of a JSONL file, the last record of each; a line cut short is redone."""
    if not path.is_file():
        return []
    runs: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            log(f"{path}:{number}: unreadable line (a run killed while writing?); it is redone")
            continue
        runs[f"{record['key']}|{json.dumps(record['settings'], sort_keys=True)}"] = record
    return list(runs.values())


def append_run(path: Path, record: dict[str, Any]) -> None:
    """Append one finished run as a JSON line, flushed to disk before the next run starts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def planned_runs(args: argparse.Namespace) -> list[tuple[str, str, str, int]]:
    """(encoder, method, split, seed) in the order of information: see the module docstring."""
    groups: list[tuple[set[str], str, list[int]]] = [
        ({"in_domain", "random"}, "per_class", args.seeds[:1]),
        ({"cross_sensor", "random_s2"}, "per_class", args.seeds[:1]),
        (set(ENCODERS), "spatially_disjoint", args.seeds[:1]),
        (set(ENCODERS), "per_class", args.seeds[1:]),
        (set(ENCODERS), "spatially_disjoint", args.seeds[1:]),
    ]
    order: list[tuple[str, str, str, int]] = []
    for encoders, split, seeds in groups:
        if split not in args.splits:
            continue
        chosen = [e for e in PRIORITY if e in encoders and e in args.encoders]
        for seed in seeds:
            # the baselines first (seconds), then each method on every encoder: pairs to compare
            order += [("-", name, split, seed) for name in CLASSIC]
            order += [(e, m, split, seed) for m in args.methods for e in chosen]
    return list(dict.fromkeys(order))  # the baselines of a split and seed are planned once


# -- pre-training -----------------------------------------------------------------------------


def scene_wide_pca(scene: HyperspectralScene) -> BandRoute:
    """12 whitened principal components of every pixel of the scene (no label is used)."""
    return BandRoute.fit("pca", scene.image.reshape(-1, scene.num_bands), num_components=12)


def pretrain_datamodule(
    corpus: str, args: argparse.Namespace, geometry: Geometry, pca: BandRoute
) -> HyperspectralPretrainDataModule:
    """Unlabelled windows of the corpus, through the band route its fine-tuning uses."""
    common = {
        "window_size": PRETRAIN_WINDOW,
        "stride": PRETRAIN_STRIDE,
        "img_size": geometry.img_size,
        "batch_size": args.pretrain_batch_size,
    }
    root = str(args.data_root)
    if corpus == "indian_pines":
        datamodule = HyperspectralPretrainDataModule(
            [{"scene": "indian_pines", "root": str(args.data_root / "indian_pines")}],
            band_route="pca",
            **common,
        )
        datamodule.load_state_dict({"scenes": ["indian_pines"], "band_routes": [pca.state_dict()]})
        return datamodule
    # Jasper Ridge's file lists the AVIRIS channels it kept (1-based): their centres, on the
    # plugin's evenly spaced AVIRIS approximation, are its wavelengths.
    kept = scipy.io.loadmat(args.data_root / "jasper_ridge" / "jasperRidge2_R198.mat")
    jasper_nm = aviris_wavelengths()[kept["SlectBands"].ravel() - 1]
    scenes = [
        {
            "scene": "generic",
            "root": root,
            "scene_options": {"image_path": "jasper_ridge/jasperRidge2_R198.mat", "name": "jasper"},
            "wavelengths": jasper_nm.tolist(),
        },
        {
            "scene": "generic",
            "root": root,
            "scene_options": {"image_path": "samson/samson_1.mat", "name": "samson"},
            "wavelengths": {"start": 401, "stop": 889},
        },
    ]
    return HyperspectralPretrainDataModule(scenes, band_route="sentinel2", **common)


def encoder_file(corpus: str, args: argparse.Namespace, geometry: Geometry) -> Path:
    """Where a corpus's pre-trained encoder is kept: its settings are in the name."""
    return args.work_dir / (
        f"encoder_{corpus}_w{geometry.embed_dim}d{geometry.depth}p{geometry.patch_size}"
        f"_s{args.pretrain_steps}b{args.pretrain_batch_size}.pth"
    )


def pretrain(
    corpus: str,
    args: argparse.Namespace,
    geometry: Geometry,
    pca: BandRoute,
    device: torch.device,
) -> Path:
    """Pre-train the MAE on a corpus (or reuse the file of an earlier run); return encoder.pth.

    AdamW (betas 0.9/0.95, weight decay 0.05, as the official recipe), linear warm-up over the
    first 5% of the steps, then cosine decay to zero.
    """
    path = encoder_file(corpus, args, geometry)
    if path.is_file():
        log(f"pre-training {corpus}: reusing {path}")
        return path
    datamodule = pretrain_datamodule(corpus, args, geometry, pca)
    pl.seed_everything(0, verbose=False)
    mae = spectralgpt_mae_vit_base(
        num_bands=datamodule.num_bands,
        img_size=geometry.img_size,
        patch_size=geometry.patch_size,
        embed_dim=geometry.embed_dim,
        depth=geometry.depth,
        num_heads=geometry.num_heads,
        **MAE_ARGS,
    ).to(device)
    optimizer = torch.optim.AdamW(
        mae.parameters(), lr=args.pretrain_lr, betas=(0.9, 0.95), weight_decay=0.05
    )
    warmup = max(1, args.pretrain_steps // 20)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (
            1 + math.cos(math.pi * (step - warmup) / max(1, args.pretrain_steps - warmup))
        )

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    loader = datamodule.train_dataloader()
    windows = len(loader.dataset)
    log(f"pre-training {corpus}: {windows} windows, {args.pretrain_steps} steps")
    start, step, losses = time.perf_counter(), 0, []
    mae.train()
    while step < args.pretrain_steps:
        for batch in loader:
            batch = datamodule.on_after_batch_transfer({"image": batch["image"].to(device)}, 0)
            loss = mae(batch["image"]).loss["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            step += 1
            if step % 100 == 0 or step == args.pretrain_steps:
                log(
                    f"  step {step}: loss {np.mean(losses[-100:]):.4f} "
                    f"({(time.perf_counter() - start) / 60:.1f} min)"
                )
            if step == args.pretrain_steps:
                break
    minutes = (time.perf_counter() - start) / 60
    extra = {
        "pretraining": {
            "corpus": corpus,
            "steps": args.pretrain_steps,
            "batch_size": args.pretrain_batch_size,
            "windows": windows,
            "minutes": minutes,
            "first_loss": float(np.mean(losses[:20])),
            "last_loss": float(np.mean(losses[-20:])),
        },
        "scenes": [source.name for source in datamodule.sources],
        "band_routes": [route.state_dict() for route in datamodule.routes],
    }
    export_encoder(mae, path, extra=extra)
    log(f"pre-training {corpus}: {minutes:.1f} min, wrote {path}")
    return path


def pretraining_facts(path: Path) -> dict[str, Any]:
    """The pre-training record stored in an encoder file by :func:`pretrain`."""
    return torch.load(path, weights_only=True)["pretraining"]


# -- fine-tuning ------------------------------------------------------------------------------


def linear_probe_task(
    geometry: Geometry, num_bands: int, num_classes: int, lr: float, ckpt: str | None
) -> ClassificationTask:
    """Frozen encoder, mean token, one Linear layer: the usual measure of a representation."""
    model_args = classification_model_args(geometry, num_bands, num_classes, ckpt)
    del model_args["head_dim_list"]  # no hidden layer: a linear head
    return ClassificationTask(
        model_args=model_args,
        model_factory="PEFTEncoderDecoderFactory",
        loss="ce",
        lr=lr,
        optimizer="AdamW",
        ignore_index=IGNORE_INDEX,
        freeze_backbone=True,
    )


def finetune(
    encoder: str,
    method: str,
    split_file: Path,
    seed: int,
    scene: HyperspectralScene,
    ckpt: Path | None,
    pca: BandRoute,
    args: argparse.Namespace,
    geometry: Geometry,
    device: torch.device,
) -> Run:
    """Fine-tune one method from one encoder on one split; test it."""
    route = ENCODERS[encoder][1]
    datamodule = HyperspectralPatchDataModule(
        scene=scene,
        split_file=str(split_file),
        batch_size=args.batch_size,
        patch_size=geometry.window,
        img_size=geometry.img_size,
        band_route=route,
    )
    if route == "pca":  # the scene-wide PCA the in-domain encoder was pre-trained on
        datamodule.load_state_dict({"band_route": pca.state_dict()})
    pl.seed_everything(seed, verbose=False)
    ckpt_path = None if ckpt is None else str(ckpt)
    bands, classes = datamodule.num_bands, datamodule.num_classes
    if method == "LINEAR_PROBE":
        task = linear_probe_task(geometry, bands, classes, method_lr(method, args), ckpt_path)
    else:
        task = build_task("classification", geometry, bands, classes, method, args.lr, ckpt_path)
    report = task.model.encoder.load_report
    if ckpt is not None and (report is None or report.missing or report.dropped):
        raise RuntimeError(f"{ckpt} did not load whole into the encoder: {report}")
    encoder_params, total_params = trainable_parameters(task)
    start = time.perf_counter()
    make_trainer(args.steps, device).fit(task, datamodule=datamodule)
    fit_seconds = time.perf_counter() - start
    limit = QUICK_TEST_BATCHES if args.quick else None
    predictions, targets = predict_patches(task, datamodule, "test", device, limit)
    return Run(
        "classification",
        method,
        datamodule.split.protocol,
        seed,
        **scores(targets, predictions, classes),
        trainable_encoder=encoder_params,
        trainable_total=total_params,
        train_pixels=len(datamodule.split.train),
        test_pixels=len(targets),
        fit_seconds=fit_seconds,
        checkpoint_tensors=0 if report is None else len(report.loaded),
        torch_threads=torch.get_num_threads(),
    )


def method_lr(method: str, args: argparse.Namespace) -> float:
    """The learning rate of a method's runs: ``--probe-lr`` for the linear probe, else ``--lr``."""
    return args.probe_lr if method == "LINEAR_PROBE" else args.lr


def matching(records: list[dict[str, Any]], args: argparse.Namespace, geometry: Geometry) -> list:
    """The records made with this invocation's settings (and its lr for the record's method)."""
    wanted = settings(args, geometry)
    return [
        r
        for r in records
        if r["settings"] == wanted and r.get("lr", args.lr) == method_lr(r["method"], args)
    ]


def settings(args: argparse.Namespace, geometry: Geometry) -> dict[str, Any]:
    """What makes runs comparable, as stored in the JSONL file (lists, not tuples)."""
    plain = {
        # Unset (None) fields are left out: a field added to Geometry later with a None default
        # (spectral_path) changes no run, and must not orphan the runs stored before it.
        "geometry": {k: v for k, v in asdict(geometry).items() if v is not None},
        "steps": args.steps,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "pretrain_steps": args.pretrain_steps,
        "pretrain_batch_size": args.pretrain_batch_size,
        "pretrain_lr": args.pretrain_lr,
        "quick": args.quick,
    }
    return json.loads(json.dumps(plain))


def run_grid(args: argparse.Namespace, geometry: Geometry, device: torch.device) -> None:
    """Every planned run not yet in ``--runs``, appended to it as soon as it finishes."""
    wanted = settings(args, geometry)
    done = {r["key"] for r in matching(read_runs(args.runs), args, geometry)}
    todo = [plan for plan in planned_runs(args) if run_key(*plan) not in done]
    log(f"{len(done)} runs already in {args.runs}; {len(todo)} to go")
    if not todo:
        return
    scene = IndianPines(args.data_root / "indian_pines")
    pca = scene_wide_pca(scene)
    encoders: dict[str, Path | None] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pretrain_then_tune_") as tmp:
        split_files: dict[tuple[str, int], Path] = {}
        for encoder, method, protocol, seed in todo:
            if (protocol, seed) not in split_files:
                split = draw_split(scene, protocol, seed, geometry.window)
                split_files[protocol, seed] = Path(tmp) / f"{protocol}_{seed}.npz"
                split.save(split_files[protocol, seed])
            if encoder == "-":
                split = draw_split(scene, protocol, seed, geometry.window)
                run, _ = classic_run(method, split, scene, args)
            else:
                corpus = ENCODERS[encoder][0]
                if encoder not in encoders:
                    encoders[encoder] = (
                        None if corpus is None else pretrain(corpus, args, geometry, pca, device)
                    )
                run = finetune(
                    encoder, method, split_files[protocol, seed], seed, scene,
                    encoders[encoder], pca, args, geometry, device,
                )  # fmt: skip
            record = {
                "key": run_key(encoder, method, protocol, seed),
                "encoder": encoder,
                "settings": wanted,
                "lr": method_lr(method, args),
                **asdict(run),
            }
            append_run(args.runs, record)
            log(
                f"{encoder:12s} {method:13s} {protocol:18s} seed {seed}: OA {run.oa:5.1f} "
                f"AA {run.aa:5.1f} kappa {run.kappa:5.1f} (fit {run.fit_seconds:.0f} s, "
                f"{(time.perf_counter() - started) / 60:.1f} min elapsed)"
            )


# -- report -----------------------------------------------------------------------------------


def summarise(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (encoder, method): per split, mean, std and count (over seeds) of each score."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for r in records:
        row = rows.setdefault(
            (r["encoder"], r["method"]),
            {
                "encoder": r["encoder"],
                "method": r["method"],
                "trainable_encoder": r["trainable_encoder"],
                "trainable_total": r["trainable_total"],
                "splits": {},
                "fit_seconds": [],
            },
        )
        row["fit_seconds"].append(r["fit_seconds"])
        per_split = row["splits"].setdefault(r["split"], {"oa": [], "aa": [], "kappa": []})
        for score in ("oa", "aa", "kappa"):
            per_split[score].append(r[score])
    order = {name: i for i, name in enumerate([*ENCODERS, "-"])}
    methods = {name: i for i, name in enumerate([*ALL_METHODS, *CLASSIC])}
    for row in rows.values():
        row["fit_seconds"] = float(np.mean(row["fit_seconds"]))
        for per_split in row["splits"].values():
            for score, values in per_split.items():
                std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
                per_split[score] = {"mean": float(np.mean(values)), "std": std, "n": len(values)}
    return sorted(rows.values(), key=lambda r: (order[r["encoder"]], methods[r["method"]]))


def _cell(score: dict[str, Any]) -> str:
    """Mean ± std over seeds; a single seed has no spread to show."""
    if score["n"] == 1:
        return f"{score['mean']:.1f}"
    return f"{score['mean']:.1f} ± {score['std']:.1f}"


def markdown_table(summary: list[dict[str, Any]], splits: list[str]) -> str:
    """OA / AA / kappa in %, mean +- std over the seeds done (their count in `Seeds`)."""
    titles = {"per_class": "per-class 10%", "spatially_disjoint": "spatially disjoint"}
    header = ["Encoder", "Method", "Trainable params (encoder)"]
    for split in splits:
        header += [f"{titles[split]} OA", "AA", "κ"]
    header += ["Seeds", "Fit s/run"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in summary:
        if row["encoder"] == "-":
            cells = ["none (200-band spectra)", row["method"], "-"]
        else:
            params = f"{row['trainable_total']:,} ({row['trainable_encoder']:,})"
            cells = [ENCODER_TITLES[row["encoder"]], row["method"], params]
        seeds = []
        for split in splits:
            got = row["splits"].get(split)
            seeds.append(str(got["oa"]["n"]) if got else "0")
            for score in ("oa", "aa", "kappa"):
                cells.append(_cell(got[score]) if got else "-")
        cells += [" / ".join(seeds), f"{row['fit_seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _oa(summary: list[dict[str, Any]], encoder: str, method: str, split: str) -> float | None:
    for row in summary:
        if (row["encoder"], row["method"]) == (encoder, method) and split in row["splits"]:
            return row["splits"][split]["oa"]["mean"]
    return None


def _params(summary: list[dict[str, Any]], encoder: str, method: str) -> tuple[int, int] | None:
    for row in summary:
        if (row["encoder"], row["method"]) == (encoder, method):
            return row["trainable_total"], row["trainable_encoder"]
    return None


def targets(summary: list[dict[str, Any]]) -> list[str]:
    """The issue's three targets, each reached, missed or not measured yet, from the rows."""
    lines = []
    adapters = [m for m in ALL_METHODS if m not in ("FULL", "LINEAR_PROBE")]
    gains = {}
    for method in adapters:
        pre, rnd = (_oa(summary, e, method, "per_class") for e in ("in_domain", "random"))
        if pre is not None and rnd is not None:
            gains[method] = pre - rnd
    if gains:
        text = ", ".join(f"{m} {g:+.1f}" for m, g in gains.items())
        verdict = (
            "reached"
            if len(gains) == len(adapters) and min(gains.values()) >= 15
            else ("missed" if min(gains.values()) < 15 else "partly measured")
        )
        lines.append(
            f"- Every adapter gains >= 15 OA points from in-domain pre-training (per-class): "
            f"**{verdict}** ({text})."
        )
    deep = [
        (row["splits"]["per_class"]["oa"]["mean"], row["encoder"], row["method"])
        for row in summary
        if row["encoder"] != "-" and "per_class" in row["splits"]
    ]
    svm = _oa(summary, "-", "SVM_RBF", "per_class")
    if deep and svm is not None:
        best = max(deep)
        lines.append(
            f"- Best route beats the SVM by >= 10 OA points (per-class): "
            f"**{'reached' if best[0] - svm >= 10 else 'missed'}** ({best[2]} on "
            f"{ENCODER_TITLES[best[1]]} {best[0]:.1f} against {svm:.1f}, {best[0] - svm:+.1f})."
        )
    for encoder in ("in_domain", "cross_sensor"):
        krona, full = (_oa(summary, encoder, m, "per_class") for m in ("KRONA_PLUS", "FULL"))
        kp, fp = _params(summary, encoder, "KRONA_PLUS"), _params(summary, encoder, "FULL")
        if krona is None or full is None or kp is None or fp is None:
            continue
        share_total, share_encoder = 100 * kp[0] / fp[0], 100 * kp[1] / fp[1]
        reached = full - krona <= 3 and share_total < 2
        lines.append(
            f"- KronA+ within 3 OA points of full fine-tuning with < 2% of its trainable "
            f"parameters ({ENCODER_TITLES[encoder]}, per-class): "
            f"**{'reached' if reached else 'missed'}** (KronA+ {krona:.1f}, FULL {full:.1f}, "
            f"{krona - full:+.1f}; {share_total:.1f}% of the trainable parameters with the head, "
            f"{share_encoder:.2f}% of the encoder's)."
        )
    svm = _oa(summary, "-", "SVM_RBF", "spatially_disjoint")
    deep = [
        (row["splits"]["spatially_disjoint"]["oa"]["mean"], row["encoder"], row["method"])
        for row in summary
        if row["encoder"] in ("in_domain", "cross_sensor") and "spatially_disjoint" in row["splits"]
    ]
    if deep and svm is not None:
        best = max(deep)
        lines.append(
            f"- Best pre-trained route beats the SVM on the spatially disjoint split: "
            f"**{'reached' if best[0] > svm else 'missed'}** ({best[2]} on "
            f"{ENCODER_TITLES[best[1]]} {best[0]:.1f} against {svm:.1f})."
        )
    return lines or ["- No target can be checked yet: no pair of rows is done."]


COLOURS = {"random": "tab:grey", "in_domain": "tab:blue", "cross_sensor": "tab:orange",
           "random_s2": "tab:brown"}  # fmt: skip


def plot(summary: list[dict[str, Any]], splits: list[str], path: Path) -> None:
    """OA (mean +- std) against trainable parameters (log x), a colour per encoder."""
    fig = Figure(figsize=(6.0 * len(splits), 4.6), layout="constrained")
    axes = fig.subplots(1, len(splits), squeeze=False)[0]
    for ax, split in zip(axes, splits, strict=True):
        for encoder, colour in COLOURS.items():
            rows = [r for r in summary if r["encoder"] == encoder and split in r["splits"]]
            for i, row in enumerate(rows):
                oa = row["splits"][split]["oa"]
                ax.errorbar(row["trainable_total"], oa["mean"], yerr=oa["std"], capsize=2,
                            marker="o", color=colour, linestyle="none",
                            label=ENCODER_TITLES[encoder] if i == 0 else None)  # fmt: skip
                ax.annotate(row["method"], (row["trainable_total"], oa["mean"]), fontsize=6,
                            color=colour, textcoords="offset points", xytext=(3, 3))  # fmt: skip
        for row in summary:
            if row["encoder"] == "-" and split in row["splits"]:
                oa = row["splits"][split]["oa"]["mean"]
                ax.axhline(oa, color="black", linestyle="--", linewidth=0.8)
                ax.annotate(row["method"], (0.01, oa), xycoords=("axes fraction", "data"),
                            fontsize=7, va="bottom")  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters (log)")
        ax.set_ylabel("OA (%)")
        ax.set_title(split.replace("_", " ") + " split")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=120)


def results_section(
    args: argparse.Namespace,
    geometry: Geometry,
    records: list[dict[str, Any]],
    table: str,
    command: str,
) -> str:
    """The Markdown of the section: setup, CPU budget, table, targets, plot, commands."""
    budgets = []
    for encoder, (corpus, _) in ENCODERS.items():
        path = encoder_file(corpus, args, geometry) if corpus else None
        if path is not None and path.is_file():
            facts = pretraining_facts(path)
            epochs = facts["steps"] * facts["batch_size"] / facts["windows"]
            budgets.append(
                f"{encoder}: {facts['steps']} steps of {facts['batch_size']} windows "
                f"({facts['windows']} windows, {epochs:.1f} epochs) in {facts['minutes']:.0f} "
                f"min, MAE loss {facts['first_loss']:.3f} -> {facts['last_loss']:.3f}"
            )
    deep = [r for r in records if r["encoder"] != "-"]
    fit = np.mean([r["fit_seconds"] for r in deep]) if deep else float("nan")
    total = sum(r["fit_seconds"] for r in records) / 60
    img = os.path.relpath(args.img_dir, args.results_md.parent) if args.img_dir else None
    planned = len(planned_runs(args))
    lines = [
        f"Produced by `benchmarks/pretrain_then_tune.py` from {len(records)} of {planned} "
        f"planned runs (`Seeds` counts the seeds done per split; a row of 1 seed has no spread).",
        "",
        f"- Command: `{command}`; resume or complete the grid with the same command, "
        "rebuild this section from the runs file with `--report-only`.",
        f"- Machine: {machine_description(run_threads=[r.get('torch_threads') for r in records])}",
        f"- Encoder: {geometry.describe()}; the MAE decoder is {MAE_ARGS['decoder_depth']} "
        f"blocks of width {MAE_ARGS['decoder_embed_dim']}, "
        f"{MAE_ARGS['mask_ratio']:.0%} of the tokens masked.",
        "- Pre-training (the plugin's `spectralgpt_mae_vit_base` sized down, the official loss): "
        f"AdamW lr {args.pretrain_lr:g} (betas 0.9/0.95, weight decay 0.05), 5% warm-up then "
        f"cosine, {PRETRAIN_WINDOW}x{PRETRAIN_WINDOW} windows at stride {PRETRAIN_STRIDE} "
        "resized as the fine-tuning patches. "
        "**in-domain**: Indian Pines' own windows, all of them - *transductive*: the test pixels "
        "are seen, their labels never; the 12-component PCA is fitted on every pixel of the "
        "scene, without labels, and the random-init PCA rows use the same one. "
        "**cross-sensor**: Jasper Ridge (AVIRIS, 198 bands, centres from the file's kept-channel "
        "list on the plugin's AVIRIS approximation) and Samson (401-889 nm, no SWIR: B9, B11, B12 "
        "fed as zeros) through the `sentinel2` route; Indian Pines is never seen before "
        "fine-tuning, which fits the same route on its training pixels.",
        "- CPU budget (wall time on the machine above, shared): "
        + ("; ".join(budgets) if budgets else f"no pre-trained encoder file in {args.work_dir}")
        + ".",
        f"- Fine-tuning: AdamW lr {args.lr:g}, {args.steps} steps of {args.batch_size} patches "
        f"for every method, no validation or early stopping; {fit:.0f} s per fit on average "
        f"({total:.0f} min of fitting in all). Methods as in the Accuracy section (Q and V of "
        "every block, r=4, lr_ratio 16); LINEAR_PROBE: frozen encoder, one Linear on the mean "
        f"token, AdamW lr {args.probe_lr:g} (a lone linear head on frozen features needs larger "
        "steps). "
        "Trainable parameters include the head; the encoder's share is in brackets.",
        f"- Splits and baselines: as in the Accuracy section (same split draws per seed; RBF SVM, "
        f"random forest of {forest_trees(args.quick)} trees on the 200-band spectra).",
        "",
        "OA / AA / κ in %, mean ± std over the seeds done (one seed: its value):",
        "",
        table,
        "",
        "Targets of the issue, checked on these rows:",
        "",
        *targets(summarise(records)),
    ]
    if img is not None:
        lines += [
            "",
            f"![OA against trainable parameters, per encoder]({img}/pretrain_then_tune.png)",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run what is missing of the grid, then print and write the report from the runs file."""
    args = parse_args(argv)
    quiet_libraries()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    geometry = QUICK_GEOMETRY if args.quick else GEOMETRY
    if not args.report_only:
        run_grid(args, geometry, device)
    every = read_runs(args.runs)
    planned = {run_key(*plan) for plan in planned_runs(args)}
    records = [r for r in matching(every, args, geometry) if r["key"] in planned]
    if len(records) < len(every):
        log(
            f"{len(every) - len(records)} runs of {args.runs} used other settings or lie outside "
            "this grid (--seeds, --splits, --methods, --encoders): left out"
        )
    if not records:
        log(f"no finished run in {args.runs} for these settings: nothing to report")
        return 1
    summary = summarise(records)
    splits = [s for s in SPLITS if any(r["split"] == s for r in records)]
    table = markdown_table(summary, splits)
    print(table, flush=True)
    if args.img_dir is not None:
        plot(summary, splits, args.img_dir / "pretrain_then_tune.png")
    if args.results_md is not None:
        argv_ = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--report-only"]
        command = "python -m benchmarks.pretrain_then_tune " + " ".join(argv_)
        body = results_section(args, geometry, records, table, command)
        update_markdown_section(
            args.results_md, "pretrain_then_tune", "## Accuracy on a pre-trained encoder", body
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
