"""SpectralGPT inside TerraTorch: EncoderDecoderFactory models and the real `terratorch fit`."""

from __future__ import annotations

import textwrap

import pytest
import torch
from terratorch.models import EncoderDecoderFactory
from terratorch_cli import terratorch

import terratorch_hsi_peft  # noqa: F401  (registers the backbones)

# Also run against the newest TerraTorch on Python 3.12 (make compat).
pytestmark = pytest.mark.compat

TINY = {
    "backbone_embed_dim": 24,
    "backbone_depth": 4,
    "backbone_num_heads": 2,
    "backbone_img_size": 32,
}


@pytest.mark.parametrize("fusion", ["concat", "mean", "learned"])
def test_unet_segmentation_builds_runs_and_trains_the_decoder(fusion):
    bands, groups = 14, 5
    time_dim = groups if fusion == "concat" else 1
    model = EncoderDecoderFactory().build_model(
        task="segmentation",
        backbone="spectralgpt_vit_base",
        **TINY,
        backbone_num_bands=bands,
        backbone_group_fusion=fusion,
        necks=[
            {"name": "SelectIndices", "indices": [0, 1, 2, 3]},
            {"name": "ReshapeTokensToImage", "effective_time_dim": time_dim},
            {"name": "LearnedInterpolateToPyramidal"},
        ],
        decoder="UNetDecoder",
        decoder_channels=[32, 16, 8, 8],
        num_classes=4,
    )
    assert model.encoder.out_channels == [24 * time_dim] * 4
    x = torch.randn(2, bands, 32, 32)
    out = model(x).output
    assert out.shape == (2, 4, 32, 32)
    out.square().mean().backward()
    decoder_grads = [p.grad for p in model.decoder.parameters()]
    assert decoder_grads and all(g is not None for g in decoder_grads)
    assert any(g.abs().sum() > 0 for g in decoder_grads)
    assert model.encoder.blocks[0].attn.q.weight.grad.abs().sum() > 0


def test_segmentation_pads_odd_sizes_to_the_patch():
    model = EncoderDecoderFactory().build_model(
        task="segmentation",
        backbone="spectralgpt_vit_base",
        **TINY,
        backbone_num_bands=12,
        necks=[
            {"name": "ReshapeTokensToImage"},
            {"name": "LearnedInterpolateToPyramidal"},
        ],
        decoder="UNetDecoder",
        decoder_channels=[32, 16, 8, 8],
        num_classes=3,
    )
    assert model.patch_size == 8  # read from the encoder's root attribute
    assert model(torch.randn(1, 12, 30, 27)).output.shape == (1, 3, 30, 27)


@pytest.mark.parametrize("fusion", ["concat", "mean"])
def test_segmentation_without_necks_reshapes_non_square_inputs(fusion):
    """No necks: TerraTorch hands the encoder's features to prepare_features_for_image_model,
    which reads the grid they carry (40x24, padded by TerraTorch to 48x32: 6x4 tokens)."""
    model = EncoderDecoderFactory().build_model(
        task="segmentation",
        backbone="spectralgpt_vit_base",
        **TINY,
        backbone_num_bands=12,
        backbone_group_fusion=fusion,
        backbone_out_indices=[-1],
        decoder="FCNDecoder",
        decoder_channels=16,
        num_classes=3,
    )
    seen = []
    model.decoder.register_forward_pre_hook(lambda _, args: seen.append(args[0][0].shape))
    for size in ((40, 24), (24, 40)):
        assert model(torch.randn(2, 12, *size)).output.shape == (2, 3, *size)
    width = model.encoder.out_channels[0]
    assert seen == [(2, width, 6, 4), (2, width, 4, 6)]


@pytest.mark.parametrize("pooling", ["prepare_features", "AggregateTokens"])
def test_classification_with_pooled_features_and_mlp_head(pooling):
    necks = (
        [{"name": "AggregateTokens", "pooling": "mean"}] if pooling == "AggregateTokens" else None
    )
    model = EncoderDecoderFactory().build_model(
        task="classification",
        backbone="spectralgpt_vit_base",
        **TINY,
        backbone_num_bands=12,
        backbone_out_indices=[-1],
        necks=necks,
        decoder="IdentityDecoder",
        head_dim_list=[16],
        head_linear_after_pool=True,
        num_classes=5,
    )
    x = torch.randn(3, 12, 32, 32)
    logits = model(x).output
    assert logits.shape == (3, 5)
    # the head sees the token mean of the last layer (after the final norm)
    pooled = model.encoder(x)[-1].mean(dim=1)
    torch.testing.assert_close(logits, model.head.head(pooled))
    logits.sum().backward()
    assert all(p.grad is not None for p in model.head.parameters())


@pytest.mark.slow
def test_terratorch_fit_cli_runs_steps_and_writes_a_checkpoint(tmp_path):
    config = tmp_path / "fit.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            seed_everything: 0
            trainer:
              accelerator: cpu
              devices: 1
              max_steps: 2
              limit_val_batches: 1
              num_sanity_val_steps: 0
              enable_progress_bar: false
              default_root_dir: {tmp_path}
              callbacks:
                - class_path: terratorch_hsi_peft.callbacks.LoadPlugin
            data:
              class_path: terratorch.datamodules.dummy_datamodule.DummyDataModule
              init_args:
                batch_size: 2
                num_workers: 0
                train_samples: 4
                val_samples: 2
                test_samples: 2
                channels: 20
                height: 32
                width: 32
                segmentation: true
                num_classes: 3
            model:
              class_path: terratorch.tasks.SemanticSegmentationTask
              init_args:
                model_factory: EncoderDecoderFactory
                loss: ce
                ignore_index: -1
                lr: 1.0e-3
                model_args:
                  backbone: spectralgpt_vit_base
                  backbone_depth: 2
                  backbone_embed_dim: 48
                  backbone_num_heads: 2
                  backbone_num_bands: 20
                  backbone_img_size: 32
                  necks:
                    - name: SelectIndices
                      indices: [0, 0, 1, 1]
                    - name: ReshapeTokensToImage
                    - name: LearnedInterpolateToPyramidal
                  decoder: UNetDecoder
                  decoder_channels: [32, 16, 8, 8]
                  num_classes: 3
            """
        )
    )
    terratorch(["fit", "--config", config], tmp_path, timeout=600)
    checkpoints = sorted(tmp_path.rglob("*.ckpt"))
    full = [c for c in checkpoints if not c.name.endswith("_state_dict.ckpt")]
    assert full, f"no training checkpoint among {checkpoints}"
    state = torch.load(full[0], map_location="cpu", weights_only=True)
    assert state["global_step"] == 2
    assert any(k.startswith("model.encoder.blocks.1.attn.q") for k in state["state_dict"])
