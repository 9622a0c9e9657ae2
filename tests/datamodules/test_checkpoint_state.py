"""What a checkpoint's datamodule state replaces is said; a damaged state is refused clearly."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch

from terratorch_hsi_peft.datamodules import HyperspectralPatchDataModule
from terratorch_hsi_peft.datasets import HyperspectralScene

SPLIT = {"protocol": "per_class", "seed": 0, "train_size": 0.2}


def _scene() -> HyperspectralScene:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=(20, 20))
    return HyperspectralScene(rng.normal(size=(20, 20, 6)), labels, class_names=["a", "b", "c"])


def _module(**kwargs) -> HyperspectralPatchDataModule:
    options = {"split": SPLIT, "band_route": "pca", "num_components": 3, **kwargs}
    return HyperspectralPatchDataModule(scene=_scene(), **options)


def _saved_state() -> dict:
    """The state a training run leaves in its checkpoint, through torch.save/load."""
    dm = _module()
    dm.routed_cube()
    buffer = io.BytesIO()
    torch.save(dm.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_the_same_configuration_restores_silently():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _module().load_state_dict(_saved_state())
        _module(split={**SPLIT, "val_size": 0.1}).load_state_dict(_saved_state())  # the default


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"split": {**SPLIT, "train_size": 0.5}}, r"train_size': 0.2.*replaces.*train_size': 0.5"),
        ({"band_route": "standardize"}, r"band route .*'pca', 6 -> 3.* replaces .*'standardize'"),
        ({"num_components": 4}, r"band route .* replaces .*num_components 4"),
        ({"append_spectra": True}, r"band route .* replaces .*append_spectra True"),
    ],
)
def test_a_different_configuration_is_named_when_the_checkpoint_replaces_it(kwargs, message):
    other = _module(**kwargs)
    with pytest.warns(UserWarning, match=message):
        other.load_state_dict(_saved_state())
    assert other.route.num_bands_out == 3  # the checkpoint's route, as the model was trained


def test_a_split_file_equal_to_the_checkpoints_split_is_not_reported(tmp_path):
    path = tmp_path / "split.npz"
    _module().split.save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _module(split=None, split_file=str(path)).load_state_dict(_saved_state())


@pytest.mark.parametrize("damage", ["no_route", "bad_params", "no_split_key", "bad_names"])
def test_a_damaged_state_is_refused_with_a_clear_error(damage):
    state = _saved_state()
    if damage == "no_route":
        del state["band_route"]
    elif damage == "bad_params":
        state["split"]["params"] = "{not json"
    elif damage == "no_split_key":
        del state["split"]["test"]
    else:
        state["class_names"] = "16"
    with pytest.raises(ValueError, match="state is damaged or was not written by this datamodule"):
        _module().load_state_dict(state)
