"""benchmarks/experiments.py: shipped experiment files plus overrides, as the studies use them."""

from __future__ import annotations

import logging

import pytest

from benchmarks.experiments import (
    DELETE,
    EXPERIMENTS,
    LOUD_LOGGERS,
    build_datamodule,
    build_model,
    encoder_size,
    load_experiment,
    override,
    quiet,
    spread_layers,
)


def test_override_sets_dotted_keys_list_items_and_deletes():
    config = {"model": {"init_args": {"lr": 1e-3, "necks": [{"indices": [2]}], "drop": 1}}}
    returned = override(
        config,
        {
            "model.init_args.lr": 0.5,
            "model.init_args.necks.0.indices": [0, 1],
            "model.init_args.drop": DELETE,
            "model.init_args.new": "default made explicit",
        },
    )
    assert returned is config
    assert config == {
        "model": {
            "init_args": {"lr": 0.5, "necks": [{"indices": [0, 1]}], "new": "default made explicit"}
        }
    }


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("model.init_args.renamed.lr", 1, r"'model\.init_args\.renamed\.lr'.*model\.init_args has "
         r"no 'renamed'"),
        ("model.init_args.necks.3.indices", [0], r"model\.init_args\.necks has no '3'"),
        ("model.init_args.necks.first", 0, r"model\.init_args\.necks is a list"),
        ("model.init_args.absent", DELETE, r"model\.init_args has no 'absent'"),
        ("data.root", "x", r"the config has no 'data'"),
    ],
)  # fmt: skip
def test_override_refuses_a_key_the_config_lacks(key, value, message):
    config = {"model": {"init_args": {"necks": [{"indices": [2]}]}}}
    with pytest.raises(KeyError, match=message):
        override(config, {key: value})
    assert config == {"model": {"init_args": {"necks": [{"indices": [2]}]}}}


def test_spread_layers_is_how_the_shipped_segmentation_files_pick_their_layers():
    checked = []
    for path in sorted(EXPERIMENTS.rglob("*.yaml")):
        name = str(path.relative_to(EXPERIMENTS).with_suffix(""))
        args = load_experiment(name)["model"]["init_args"].get("model_args", {})
        necks = [n for n in args.get("necks", []) if n["name"] == "SelectIndices"]
        if not necks:
            continue
        (neck,) = necks
        checked.append(name)
        depth = args.get("backbone_depth", 12)  # the files ship ViT-B's 12 blocks
        assert neck["indices"] == spread_layers(len(neck["indices"]), depth), name
    assert "indian_pines/segmentation/full" in checked
    assert spread_layers(4, 2) == [0, 0, 0, 1] and spread_layers(4, 1) == [0, 0, 0, 0]


def test_encoder_size_respreads_the_decoders_layers():
    config = encoder_size(load_experiment("indian_pines/segmentation/full"), 32, 2, 2, 8)
    args = config["model"]["init_args"]["model_args"]
    assert [args[f"backbone_{k}"] for k in ("embed_dim", "depth", "num_heads", "patch_size")] == [
        32,
        2,
        2,
        8,
    ]
    assert args["necks"][0] == {"name": "SelectIndices", "indices": [0, 0, 0, 1]}
    assert args["decoder_channels"] == [256, 128, 64, 32]  # the rest is the shipped file's


def test_load_experiment_names_the_shipped_ones():
    with pytest.raises(FileNotFoundError, match=r"No experiment 'quickstrat'.*'quickstart'"):
        load_experiment("quickstrat")


@pytest.mark.slow
def test_build_model_is_the_shipped_task_with_the_overrides():
    config = load_experiment("quickstart")
    encoder_size(config, 32, 2, 2)
    override(config, {"model.init_args.model_args.backbone_pretrained": False})
    task = build_model(config)
    assert type(task).__name__ == "ClassificationTask"
    encoder = task.model.encoder
    assert len(encoder.blocks) == 2 and encoder.blocks[0].attn.q.in_features == 32
    assert task.model.spectral_path is not None  # the quickstart's path, as shipped


def test_build_datamodule_is_the_shipped_data_with_the_overrides(tmp_path):
    config = load_experiment("indian_pines/segmentation/full")
    override(config, {"data.init_args.root": str(tmp_path), "data.init_args.batch_size": 3})
    datamodule = build_datamodule(config)
    assert type(datamodule).__name__ == "HyperspectralSceneDataModule"
    shipped = load_experiment("indian_pines/segmentation/full")["data"]["init_args"]
    assert (datamodule.batch_size, datamodule.tile_size) == (3, shipped["tile_size"])
    assert datamodule.append_spectra is shipped["append_spectra"] is True


def test_quiet_restores_the_logger_levels():
    """Lightning's rank-zero logger carries the plugin's messages: quiet() must not mute it."""
    before = {name: logging.getLogger(name).level for name in LOUD_LOGGERS}
    with quiet():
        assert all(logging.getLogger(n).level == logging.ERROR for n in LOUD_LOGGERS)
    assert {name: logging.getLogger(name).level for name in LOUD_LOGGERS} == before
    assert logging.getLogger("lightning.pytorch.utilities.rank_zero").getEffectiveLevel() < (
        logging.ERROR
    )
