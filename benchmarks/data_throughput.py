"""Does the data pipeline keep up with the model? Loader samples/s against model samples/s.

For the patch formulation (``configs/experiments/paper/spectralgpt_b/full.yaml``: Indian Pines,
PCA to 12 bands, 9x9 windows resized to 32x32) and the scene formulation
(``configs/experiments/indian_pines/segmentation/full.yaml``: 32x32 tiles, the pixels' whole
spectra appended for the spectral path), it times, with the data and the model built from the
experiment file plus overrides (:mod:`benchmarks.experiments`):

- the loader: the file's datamodule (batch size, workers and ``--train-transform`` overridden:
  none, the plugin's batch transforms, or albumentations per sample), its training dataloader,
  batches moved to the device, augmented and passed through ``on_after_batch_transfer`` (the
  resize), as Lightning does;
- the model: forward + backward (bf16 autocast on CUDA) of the file's model (random weights)
  with its SpectralGPT encoder resized (``tiny``: 2 blocks of 96 channels; ``medium``: 6 blocks
  of 384; ``base``: the file's own, the released ViT-Base) on a batch of the loader's.

The pipeline never starves the model when loader samples/s exceeds model samples/s.

Usage::

    python -m benchmarks.data_throughput --root ../shared/data/indian_pines [--device cuda]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from benchmarks.experiments import (
    build_datamodule,
    build_model,
    encoder_size,
    load_experiment,
    override,
    quiet,
)

#: Each formulation's shipped experiment: its datamodule and its model.
EXPERIMENTS = {
    "patch 9x9 -> 32x32": "paper/spectralgpt_b/full",
    "scene tiles 32x32": "indian_pines/segmentation/full",
}

FLIPS = {"class_path": "terratorch_hsi_peft.transforms.RandomFlipRotate"}
#: ``--train-transform`` presets: TerraTorch-style lists.
TRANSFORMS = {
    "none": None,
    "flips": [FLIPS],
    "flips_jitter": [FLIPS, {"class_path": "terratorch_hsi_peft.transforms.SpectralJitter"}],
    "albumentations": [
        {"class_path": "albumentations.HorizontalFlip"},
        {"class_path": "albumentations.RandomRotate90"},
    ],
}
#: Encoder sizes (``encoder_size`` overrides: width, depth, heads); ``base``: the file's own.
MODELS: dict[str, tuple[int, int, int] | None] = {
    "tiny": (96, 2, 3),
    "medium": (384, 6, 6),
    "base": None,
}


def _rate(step: Callable[[], int], seconds: float) -> float:
    """Samples per second of ``step`` (returns its batch size), after one warm-up call."""
    step()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        done += step()
    return done / (time.perf_counter() - start)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loader_rate(datamodule, device: torch.device, seconds: float) -> float:
    """Training batches per second through transfer and ``on_after_batch_transfer``."""
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    batches: Iterator = iter(())

    def step() -> int:
        nonlocal batches
        batch = next(batches, None)
        if batch is None:  # a new epoch
            batches = iter(loader)
            batch = next(batches)
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        batch = datamodule.on_after_batch_transfer(datamodule.augment(batch), 0)
        _synchronize(device)
        return len(batch["image"])

    return _rate(step, seconds)


def model_rate(experiment: str, size: str, image: torch.Tensor, seconds: float) -> float:
    """Forward + backward samples per second of the experiment's model on ``image``.

    The model of ``configs/experiments/<experiment>.yaml`` with random weights and, unless
    ``size`` is ``base``, the encoder of :data:`MODELS` ``[size]``.
    """
    config = load_experiment(experiment)
    if MODELS[size] is not None:
        encoder_size(config, *MODELS[size])
    override(config, {"model.init_args.model_args.backbone_pretrained": False})
    with quiet():
        model = build_model(config).model.to(image.device)

    def step() -> int:
        # bf16 autocast as in GPU training; CPU bf16 kernels are slower than float32, so not there.
        with torch.autocast(image.device.type, torch.bfloat16, enabled=image.is_cuda):
            loss = model(image).output.float().mean()
        loss.backward()
        _synchronize(image.device)
        return len(image)

    return _rate(step, seconds)


def experiment_datamodule(experiment: str, args: argparse.Namespace, tiles: bool) -> Any:
    """The experiment's datamodule with the run's root, batch size, workers and transform.

    ``tiles``: batches of ``--batch-size // 16`` (at least 1) instead of ``--batch-size``.
    """
    config = load_experiment(experiment)
    data = "data.init_args"
    return build_datamodule(
        override(
            config,
            {
                f"{data}.root": args.root,
                f"{data}.batch_size": max(args.batch_size // 16, 1) if tiles else args.batch_size,
                f"{data}.num_workers": args.num_workers,
                f"{data}.train_transform": TRANSFORMS[args.train_transform],
            },
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="folder holding the Indian Pines files")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=5.0, help="time per measurement")
    parser.add_argument("--models", nargs="+", default=["tiny", "medium"], choices=MODELS)
    parser.add_argument("--train-transform", default="flips", choices=TRANSFORMS)
    args = parser.parse_args()
    device = torch.device(args.device)
    formulations = {
        name: experiment_datamodule(experiment, args, tiles=name.startswith("scene"))
        for name, experiment in EXPERIMENTS.items()
    }
    print(
        f"device: {device}, batch size {args.batch_size}, workers {args.num_workers}, "
        f"train_transform {args.train_transform}"
    )
    for name, datamodule in formulations.items():
        loader = loader_rate(datamodule, device, args.seconds)
        print(f"{name}: loader {loader:10.0f} samples/s")
        image = datamodule.on_after_batch_transfer(
            {"image": next(iter(datamodule.train_dataloader()))["image"].to(device)}, 0
        )["image"]
        for size in args.models:
            rate = model_rate(EXPERIMENTS[name], size, image, args.seconds)
            verdict = "loader keeps up" if loader >= rate else "LOADER IS THE BOTTLENECK"
            print(f"{name}: {size:>6} model {rate:10.0f} samples/s  ({verdict})")


if __name__ == "__main__":
    main()
