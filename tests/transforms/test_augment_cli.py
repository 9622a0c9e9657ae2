"""A YAML with a TerraTorch-style ``train_transform`` list trains through the real CLI."""

from __future__ import annotations

import sys
from pathlib import Path
from unittest import mock

import pytest
from terratorch.cli_tools import build_lightning_cli

from terratorch_hsi_peft.transforms import RandomFlipRotate, SpectralJitter

pytestmark = pytest.mark.slow

# The list a TerraTorch user writes for GenericNonGeoSegmentationDataModule, plus the plugin's
# batch transforms.
TRANSFORMS = """\
    train_transform:
      - class_path: albumentations.HorizontalFlip
        init_args: {p: 0.5}
      - class_path: albumentations.RandomRotate90
      - class_path: albumentations.pytorch.transforms.ToTensorV2
      - class_path: terratorch_hsi_peft.transforms.RandomFlipRotate
      - class_path: terratorch_hsi_peft.transforms.SpectralJitter
        init_args: {gain_std: 0.05}
"""
BACKBONE = """\
      backbone: spectralgpt_vit_base
      backbone_depth: 1
      backbone_embed_dim: 16
      backbone_num_heads: 2
      backbone_num_bands: 3
      backbone_img_size: 8
      num_classes: 16
"""
CONFIGS = {
    "patch": """\
data:
  class_path: terratorch_hsi_peft.datamodules.HyperspectralPatchDataModule
  init_args:
    scene: indian_pines
    root: {root}
    split: {{protocol: per_class, seed: 0, train_size: 0.05, val_size: 0.05}}
    num_components: 3
    patch_size: 5
    img_size: 8
    batch_size: 64
{transforms}model:
  class_path: terratorch.tasks.ClassificationTask
  init_args:
    model_factory: EncoderDecoderFactory
    model_args:
{backbone}      backbone_out_indices: [-1]
      decoder: IdentityDecoder
""",
    "tiles": """\
data:
  class_path: terratorch_hsi_peft.datamodules.HyperspectralSceneDataModule
  init_args:
    scene: indian_pines
    root: {root}
    split: {{protocol: per_class, seed: 0, train_size: 0.05, val_size: 0.05}}
    num_components: 3
    tile_size: 8
    batch_size: 8
{transforms}model:
  class_path: terratorch.tasks.SemanticSegmentationTask
  init_args:
    model_factory: EncoderDecoderFactory
    loss: ce
    ignore_index: -1
    plot_on_val: false
    model_args:
{backbone}      necks:
        - {{name: SelectIndices, indices: [0]}}
        - {{name: ReshapeTokensToImage}}
      decoder: FCNDecoder
""",
}
TRAINER = """\
seed_everything: 0
trainer:
  accelerator: cpu
  max_steps: 2
  limit_val_batches: 1
  num_sanity_val_steps: 0
  enable_progress_bar: false
  enable_checkpointing: false
  logger: false
  default_root_dir: {run}   # TerraTorch copies the configs there
"""


@pytest.mark.parametrize("formulation", ["patch", "tiles"])
def test_yaml_with_a_terratorch_style_transform_list_trains(formulation, shared_data, tmp_path):
    config = tmp_path / f"{formulation}.yaml"
    body = CONFIGS[formulation].format(
        root=shared_data / "indian_pines", transforms=TRANSFORMS, backbone=BACKBONE
    )
    config.write_text(TRAINER.format(run=tmp_path / "run") + body)
    with mock.patch.object(sys, "argv", sys.argv[:1]):
        cli = build_lightning_cli(["fit", "-c", str(config)])
    assert cli.trainer.global_step == 2
    datamodule = cli.datamodule
    names = [type(t).__name__ for t in datamodule._sample_transform.transforms]
    assert names == ["HorizontalFlip", "RandomRotate90"]  # ToTensorV2 dropped: tensors already
    batch = datamodule._batch_transforms
    assert [type(t) for t in batch] == [RandomFlipRotate, SpectralJitter]
    assert batch[1].gain_std == 0.05


def test_shipped_patch_config_flips_and_null_switches_it_off(shared_data, tmp_path):
    """configs/data/indian_pines_patch.yaml flips by default; the documented override removes it."""
    config = tmp_path / "tiny.yaml"
    body = CONFIGS["patch"].format(
        root=shared_data / "indian_pines", transforms="", backbone=BACKBONE
    )
    config.write_text(TRAINER.format(run=tmp_path / "run") + body)
    shipped = Path(__file__).resolve().parents[2] / "configs" / "data" / "indian_pines_patch.yaml"
    # The shipped data file first, the tiny model after it (its data keys override the sizes).
    args = ["fit", "-c", str(shipped), "-c", str(config)]
    with mock.patch.object(sys, "argv", sys.argv[:1]):
        flipped = build_lightning_cli(args)
        plain = build_lightning_cli([*args, "--data.init_args.train_transform", "null"])
    assert [type(t) for t in flipped.datamodule._batch_transforms] == [RandomFlipRotate]
    assert plain.datamodule._batch_transforms == [] and plain.datamodule._sample_transform is None
