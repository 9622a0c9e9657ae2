"""HyperspectralPatchDataModule: leak-free statistics, exact windows, labels, state, errors."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight

from terratorch_hsi_peft.datamodules import HyperspectralPatchDataModule
from terratorch_hsi_peft.datasets import HyperspectralScene


def _scene(seed: int = 0, size: int = 24, bands: int = 8) -> HyperspectralScene:
    rng = np.random.default_rng(seed)
    image = rng.normal(100.0, 10.0, size=(size, size, bands)) * rng.uniform(1, 5, bands)
    labels = rng.integers(0, 4, size=(size, size))  # 0 = unlabelled, classes 1..3
    return HyperspectralScene(image, labels, class_names=["a", "b", "c"], name="synthetic")


def _module(scene: HyperspectralScene, **kwargs) -> HyperspectralPatchDataModule:
    split = {"protocol": "per_class", "seed": 0, "train_size": 0.2}
    options = {"split": split, "band_route": "standardize", **kwargs}
    return HyperspectralPatchDataModule(scene=scene, **options)


@pytest.mark.parametrize("route", ["standardize", "pca"])
def test_statistics_come_from_training_pixels_only(route):
    scene = _scene()
    dm = _module(scene, band_route=route, num_components=4)
    split = dm.split
    flat = scene.image.reshape(-1, scene.num_bands)
    flat[split.test] += 5000.0  # test pixels from another world: any leak moves the mean
    train = flat[split.train].astype(np.float64)
    np.testing.assert_allclose(dm.route.mean.numpy(), train.mean(0), rtol=1e-10)
    assert np.all(np.abs(dm.route.mean.numpy() - flat.mean(0)) > 1000)
    if route == "standardize":
        np.testing.assert_allclose(np.diag(dm.route.matrix.numpy()), 1 / train.std(0), rtol=1e-10)
    routed = dm.routed_cube().reshape(dm.num_bands, -1)[:, split.train].double()
    np.testing.assert_allclose(routed.mean(1).numpy(), 0.0, atol=1e-4)
    np.testing.assert_allclose(routed.std(1, unbiased=False).numpy(), 1.0, rtol=1e-4)


def test_windows_are_reflect_padded_slices_with_raw_labels_minus_one():
    scene = _scene()
    dm = _module(scene, band_route="none", patch_size=5)
    padded = np.pad(scene.image, ((2, 2), (2, 2), (0, 0)), mode="reflect")
    dataset = dm._make_dataset("train")
    batch = dataset.__getitems__(list(range(len(dataset))))
    for i in range(len(dataset)):
        row, col = divmod(int(dataset.pixels[i]), scene.shape[1])
        expected = padded[row : row + 5, col : col + 5].transpose(2, 0, 1)
        np.testing.assert_array_equal(batch["image"][i].numpy(), expected)
        assert batch["label"][i] == scene.labels[row, col] - 1
    assert set(dataset.pixels.tolist()) == set(dm.split.train.tolist())
    corner = dataset.padded[:, :5, :5]  # the window of pixel (0, 0) mirrors rows/cols 1, 2
    np.testing.assert_array_equal(corner[:, 0].numpy(), corner[:, 4].numpy())


def test_predict_covers_every_pixel_in_row_major_order_and_pastes_back():
    scene = _scene()
    dm = _module(scene)
    dataset = dm._make_dataset("predict")
    assert len(dataset) == scene.shape[0] * scene.shape[1]
    assert "label" not in dataset[0]
    class_map = np.full(scene.shape, -1)
    truth = np.random.default_rng(1).integers(0, 3, scene.shape)
    order = np.random.default_rng(2).permutation(len(dataset)).tolist()
    dataset.paste(class_map, order, torch.from_numpy(truth.reshape(-1)[order]))
    np.testing.assert_array_equal(class_map, truth)


def test_loader_batches_are_resized_on_transfer():
    dm = _module(_scene(), patch_size=7, img_size=16, batch_size=10)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (10, 8, 7, 7) and batch["label"].dtype == torch.int64
    resized = dm.on_after_batch_transfer(dict(batch), 0)["image"]
    expected = F.interpolate(batch["image"], size=(16, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(resized, expected)


def test_class_weights_match_sklearn_balanced():
    dm = _module(_scene())
    targets = dm.targets(dm.split.train)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=targets)
    np.testing.assert_allclose(dm.class_weight_values(), expected)


def test_state_dict_round_trip_wins_over_a_refit():
    scene = _scene()
    dm = _module(scene, band_route="pca", num_components=3)
    dm.routed_cube()
    buffer = io.BytesIO()
    torch.save(dm.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    split = {"protocol": "per_class", "seed": 9}
    other = _module(scene, band_route="pca", num_components=3, split=split)
    with pytest.warns(UserWarning, match="seed 0.*replaces.*seed 9"):
        other.load_state_dict(state)
    torch.testing.assert_close(other.route.matrix, dm.route.matrix)
    np.testing.assert_array_equal(other.split.test, dm.split.test)
    torch.testing.assert_close(other.routed_cube(), dm.routed_cube())


def test_model_config_mismatch_names_the_fix():
    dm = _module(_scene(), band_route="pca", num_components=4)
    module = SimpleNamespace(hparams={"model_args": {"num_classes": 3, "backbone_num_bands": 12}})
    dm.trainer = SimpleNamespace(lightning_module=module)
    with pytest.raises(ValueError, match="backbone_num_bands is 12 but the data give 4"):
        dm.setup("fit")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"patch_size": 4}, "odd"),
        ({"split_file": "x.npz"}, "not both"),
        ({"interpolation": "area"}, "interpolation"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_options_are_explained(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _module(_scene(), **kwargs)


def test_named_scene_needs_root():
    with pytest.raises(ValueError, match="needs root"):
        HyperspectralPatchDataModule(scene="indian_pines")


def test_sentinel2_route_on_real_indian_pines(shared_data):
    dm = HyperspectralPatchDataModule(
        scene="indian_pines", root=str(shared_data / "indian_pines"), band_route="sentinel2"
    )
    assert dm.num_bands == 12
    cube = dm.routed_cube()
    assert cube.shape == (12, 145, 145)
    assert dm.route.band_names[-1] == "B12" and torch.all(dm.route.matrix.abs().sum(1) > 0)
    train = cube.reshape(12, -1)[:, dm.split.train]
    torch.testing.assert_close(train.mean(1), torch.zeros(12), atol=1e-4, rtol=0)
