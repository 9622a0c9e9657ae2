"""The pre-training datamodule: unlabelled windows of real scenes through the band routes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from task_stand_in import fit_setup

from terratorch_hsi_peft.datamodules import (
    HyperspectralPatchDataModule,
    HyperspectralPretrainDataModule,
)

SAMSON = {
    "scene": "generic",
    "scene_options": {"image_path": "samson/samson_1.mat", "name": "samson"},
    "wavelengths": {"start": 401, "stop": 889},
}
JASPER = {
    "scene": "generic",
    "scene_options": {"image_path": "jasper_ridge/jasperRidge2_R198.mat", "name": "jasper"},
}
# patch_size as the patch datamodule fills it in (its own patch_size, 9): the same split
DISJOINT = {
    "protocol": "spatially_disjoint",
    "block_size": 29,
    "test_fraction": 0.3,
    "patch_size": 9,
    "seed": 0,
}


def indian_pines(shared_data, **entry):
    return {"scene": "indian_pines", "root": str(shared_data / "indian_pines"), **entry}


def first_batch(datamodule, stage="train"):
    loader = datamodule.train_dataloader() if stage == "train" else datamodule.val_dataloader()
    return next(iter(loader))["image"]


def test_one_scene_serves_every_window_through_the_route(shared_data):
    dm = HyperspectralPretrainDataModule(
        [indian_pines(shared_data)], band_route="pca", window_size=32, batch_size=8
    )
    assert dm.num_bands == 12
    origins = dm.window_origins()
    assert len(origins["train"]) == 9 * 9 and len(origins["val"]) == 0  # 145 px: 9 starts
    image = first_batch(dm)
    assert image.shape == (8, 1, 12, 32, 32) and image.dtype == torch.float32
    top, left = origins["train"][0, 1:].tolist()  # shuffled loader: compare through the dataset
    window = dm.routed_cubes()[0][:, top : top + 32, left : left + 32]
    dataset_item = dm.train_dataloader().dataset[0]["image"]
    assert torch.equal(dataset_item[0], window)
    # whitened PCA fitted on every pixel of the scene: unit variance per component
    cube = dm.routed_cubes()[0].reshape(12, -1)
    torch.testing.assert_close(cube.var(1, unbiased=False), torch.ones(12), rtol=1e-3, atol=1e-3)


@pytest.mark.filterwarnings("ignore:Spatially disjoint split")  # 29-pixel blocks miss classes
def test_inductive_split_leaves_out_test_blocks_and_matches_the_finetuning_route(shared_data):
    dm = HyperspectralPretrainDataModule(
        [indian_pines(shared_data, split=DISJOINT)], band_route="pca", window_size=16
    )
    finetune = HyperspectralPatchDataModule(
        scene="indian_pines",
        root=str(shared_data / "indian_pines"),
        split=DISJOINT,
        band_route="pca",
    )
    split = finetune.split
    blocks = (np.arange(145) // 29)[:, None] * 5 + (np.arange(145) // 29)[None, :]
    test_region = np.isin(blocks, np.unique(blocks.reshape(-1)[split.test]))
    origins = dm.window_origins()["train"]
    assert 0 < len(origins) < 17 * 17  # some windows left out, some served
    for _, top, left in origins.tolist():
        assert not test_region[top : top + 16, left : left + 16].any()
    # the route is fitted on the split's training pixels, exactly as fine-tuning fits it
    pretrain_route, finetune_route = dm.routes[0], finetune.route
    assert torch.equal(pretrain_route.mean, finetune_route.mean)
    assert torch.equal(pretrain_route.matrix, finetune_route.matrix)


def test_per_class_split_has_no_test_blocks(shared_data):
    per_class = {"protocol": "per_class", "train_size": 0.1, "seed": 0}
    dm = HyperspectralPretrainDataModule([indian_pines(shared_data, split=per_class)])
    with pytest.raises(ValueError, match=r"has no test blocks.*leave_out_test"):
        dm.window_origins()
    dm = HyperspectralPretrainDataModule(
        [indian_pines(shared_data, split=per_class, leave_out_test=False)], band_route="pca"
    )
    assert len(dm.window_origins()["train"]) == 81
    finetune = HyperspectralPatchDataModule(
        scene="indian_pines", root=str(shared_data / "indian_pines"), split=per_class
    )
    assert torch.equal(dm.routes[0].matrix, finetune.route.matrix)


def test_scenes_of_three_sensors_mix_through_pca_and_sentinel2(shared_data):
    root = str(shared_data)
    scenes = [indian_pines(shared_data), {**SAMSON, "root": root}, {**JASPER, "root": root}]
    dm = HyperspectralPretrainDataModule(scenes, band_route="pca", window_size=32, val_fraction=0.2)
    origins = dm.window_origins()
    every = torch.cat([origins["train"], origins["val"]])
    assert set(every[:, 0].tolist()) == {0, 1, 2}
    assert len(every) == 81 + 5 * 5 + 6 * 6  # 95 px: 5 starts per side; 100 px: 6
    assert len(origins["val"]) == round(0.2 * len(every))
    assert first_batch(dm, "val").shape[1:] == (1, 12, 32, 32)

    with pytest.warns(UserWarning, match="B9|B11|B12"):  # Samson has no SWIR
        s2 = HyperspectralPretrainDataModule(scenes[:2], band_route="sentinel2")
        assert [route.num_bands_out for route in s2.routes] == [12, 12]
    assert first_batch(s2).shape == (16, 1, 12, 32, 32)


def test_native_bands_of_different_sensors_are_refused_with_the_fix(shared_data):
    """Each scene is named with its own band count (not sorted counts beside unsorted names)."""
    root = str(shared_data)
    scenes = [indian_pines(shared_data), {**SAMSON, "root": root}, {**JASPER, "root": root}]
    dm = HyperspectralPretrainDataModule(scenes, band_route="standardize")
    each = r"\('indian_pines': 200, 'samson': 156, 'jasper': 198\)"
    with pytest.raises(ValueError, match=rf"band counts on the 'standardize' route {each}"):
        dm.num_bands  # noqa: B018
    with pytest.raises(ValueError, match=rf"{each}.*sentinel2.*pca"):
        dm.routes  # noqa: B018 - the fitted routes are checked the same way


def test_routes_travel_in_the_checkpoint_state(shared_data):
    dm = HyperspectralPretrainDataModule([indian_pines(shared_data)], band_route="pca")
    state = dm.state_dict()
    assert state == {}  # nothing fitted yet
    dm.routed_cubes()
    state = dm.state_dict()
    assert state["scenes"] == ["indian_pines"]
    restored = HyperspectralPretrainDataModule([indian_pines(shared_data)], band_route="pca")
    restored.load_state_dict(state)
    assert torch.equal(restored.routed_cubes()[0], dm.routed_cubes()[0])
    other = HyperspectralPretrainDataModule([{**SAMSON, "root": str(shared_data)}])
    with pytest.raises(ValueError, match="same scenes in the same order"):
        other.load_state_dict(state)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scenes": []}, "non-empty list"),
        ({"scenes": {"scene": "indian_pines"}}, "non-empty list"),
        ({"scenes": [{"scene": "indian_pines", "roots": "x"}]}, "unknown keys \\['roots'\\]"),
        ({"scenes": [{"scene": "indian_pines"}]}, "needs root"),
        ({"stride": 40}, "stride <= window_size"),
        ({"val_fraction": 1.0}, "val_fraction"),
    ],
)
def test_bad_settings_are_named(shared_data, kwargs, message):
    options = {"scenes": [indian_pines(shared_data)], **kwargs}
    with pytest.raises(ValueError, match=message):
        HyperspectralPretrainDataModule(**options)


def test_window_larger_than_a_scene_is_named(shared_data):
    dm = HyperspectralPretrainDataModule([indian_pines(shared_data)], window_size=160, stride=16)
    with pytest.raises(ValueError, match="larger than scene 'indian_pines'"):
        dm.window_origins()


def test_shared_root_and_resized_windows(shared_data):
    scenes = [{"scene": "indian_pines", "root": "indian_pines"}, SAMSON]
    dm = HyperspectralPretrainDataModule(
        scenes, root=str(shared_data), band_route="pca", window_size=9, stride=4, img_size=32
    )
    assert [source.scene.shape for source in dm.sources] == [(145, 145), (95, 95)]
    raw = first_batch(dm)
    assert raw.shape == (16, 1, 12, 9, 9)
    resized = dm.on_after_batch_transfer({"image": raw}, 0)["image"]
    assert resized.shape == (16, 1, 12, 32, 32)
    expected = torch.nn.functional.interpolate(raw[:, 0], size=(32, 32), mode="bilinear")
    torch.testing.assert_close(resized[:, 0], expected)


@pytest.mark.parametrize(
    ("model_args", "message"),
    [
        ({"num_bands": "12", "img_size": "32"}, None),  # dotted CLI overrides: strings
        ({"num_bands": "6"}, r"num_bands is 6 but the data give 12"),
        ({"img_size": "true"}, r"img_size is True but the data give 32"),
    ],
)
def test_setup_reads_cli_strings_as_yaml_scalars(shared_data, model_args, message):
    dm = HyperspectralPretrainDataModule([indian_pines(shared_data)], img_size=32)
    fit_setup(dm, model_args, message)


def test_a_damaged_checkpoint_state_is_named(shared_data):
    dm = HyperspectralPretrainDataModule([indian_pines(shared_data)], band_route="pca")
    with pytest.raises(ValueError, match="state is damaged or was not written by this datamodule"):
        dm.load_state_dict({"scenes": ["indian_pines"]})
