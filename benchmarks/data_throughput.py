"""Does the data pipeline keep up with the model? Loader samples/s against model samples/s.

For the patch formulation (Indian Pines, PCA to 12 bands, 9x9 windows resized to 32x32) and the
scene formulation (32x32 tiles), it times:

- the loader: the datamodule's training dataloader, batches moved to the device, augmented
  (``--train-transform``: none, the plugin's batch transforms, or albumentations per sample) and
  passed through ``on_after_batch_transfer`` (the resize), as Lightning does;
- the model: forward + backward (bf16 autocast on CUDA) of a SpectralGPT encoder (``tiny``:
  2 blocks of 96 channels; ``medium``: 6 blocks of 384; ``base``: the released ViT-Base) on a
  batch of the same shape.

The pipeline never starves the model when loader samples/s exceeds model samples/s.

Usage::

    python -m benchmarks.data_throughput --root ../shared/data/indian_pines [--device cuda]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator

import torch

import terratorch_hsi_peft  # noqa: F401  (registers the backbone)
from terratorch_hsi_peft.backbones import spectralgpt_vit_base
from terratorch_hsi_peft.datamodules import (
    HyperspectralPatchDataModule,
    HyperspectralSceneDataModule,
)

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
MODELS = {
    "tiny": {"embed_dim": 96, "depth": 2, "num_heads": 3},
    "medium": {"embed_dim": 384, "depth": 6, "num_heads": 6},
    "base": {},
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


def model_rate(size: str, image: torch.Tensor, seconds: float) -> float:
    """Forward + backward samples per second of a SpectralGPT encoder on ``image``."""
    bands, img = image.shape[1], image.shape[-1]
    model = spectralgpt_vit_base(num_bands=bands, img_size=img, out_indices=[-1], **MODELS[size])
    model = model.to(image.device)

    def step() -> int:
        # bf16 autocast as in GPU training; CPU bf16 kernels are slower than float32, so not there.
        with torch.autocast(image.device.type, torch.bfloat16, enabled=image.is_cuda):
            loss = model(image)[-1].float().mean()
        loss.backward()
        _synchronize(image.device)
        return len(image)

    return _rate(step, seconds)


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
    common = {
        "scene": "indian_pines",
        "root": args.root,
        "num_components": 12,
        "num_workers": args.num_workers,
        "train_transform": TRANSFORMS[args.train_transform],
    }
    formulations = {
        "patch 9x9 -> 32x32": HyperspectralPatchDataModule(
            **common, patch_size=9, img_size=32, batch_size=args.batch_size
        ),
        "scene tiles 32x32": HyperspectralSceneDataModule(
            **common, tile_size=32, batch_size=max(args.batch_size // 16, 1)
        ),
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
            rate = model_rate(size, image, args.seconds)
            verdict = "loader keeps up" if loader >= rate else "LOADER IS THE BOTTLENECK"
            print(f"{name}: {size:>6} model {rate:10.0f} samples/s  ({verdict})")


if __name__ == "__main__":
    main()
