"""Splits: reproducible, disjoint, labelled pixels only, and no leak across a patch window."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.io

from terratorch_hsi_peft.datasets import (
    Split,
    make_split,
    per_class_split,
    spatially_disjoint_split,
)


@pytest.fixture(scope="module")
def pines_labels(shared_data) -> np.ndarray:
    path = shared_data / "indian_pines" / "Indian_pines_gt.mat"
    return scipy.io.loadmat(path)["indian_pines_gt"].astype(np.int64)


def _assert_sound(split: Split, labels: np.ndarray) -> None:
    flat = labels.ravel()
    sets = [split.train, split.val, split.test]
    for idx in sets:
        assert idx.dtype == np.int64 and np.all(np.diff(idx) > 0)  # sorted, no repeats
        assert (flat[idx] > 0).all()  # never an unlabelled pixel
    union = np.concatenate(sets)
    assert np.unique(union).size == union.size  # disjoint
    split.validate(labels)


def _per_class(idx: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.bincount(labels.ravel()[idx], minlength=labels.max() + 1)[1:]


def test_per_class_fraction_matches_an_independent_count(pines_labels):
    split = per_class_split(pines_labels, train_size=0.1, val_size=0.25, seed=3)
    _assert_sound(split, pines_labels)
    totals = np.bincount(pines_labels.ravel())[1:]
    n_train = np.maximum(np.minimum(np.round(0.1 * totals), totals - 1), np.minimum(5, totals // 2))
    n_val = np.round(0.25 * n_train)
    np.testing.assert_array_equal(_per_class(split.val, pines_labels), n_val)
    np.testing.assert_array_equal(_per_class(split.train, pines_labels), n_train - n_val)
    # every labelled pixel is used exactly once
    assert split.train.size + split.val.size + split.test.size == 10_249
    assert split.protocol == "per_class" and split.seed == 3
    assert split.params == {
        "train_size": 0.1,
        "val_size": 0.25,
        "min_train_per_class": 5,
        "classes_missing": {"train": [], "test": []},
    }


def test_per_class_count_is_capped_at_half_a_small_class(pines_labels):
    split = per_class_split(pines_labels, train_size=50, val_size=5, seed=0)
    train = _per_class(split.train, pines_labels) + _per_class(split.val, pines_labels)
    totals = np.bincount(pines_labels.ravel())[1:]
    np.testing.assert_array_equal(train, np.minimum(50, totals // 2))  # Oats: 20 -> 10
    np.testing.assert_array_equal(_per_class(split.val, pines_labels), 5)
    assert (_per_class(split.test, pines_labels) > 0).all()


def test_per_class_warns_about_a_class_with_a_single_pixel():
    labels = np.zeros((10, 10), np.int64)
    labels[:4] = 1  # 40 pixels
    labels[5, :6] = 2  # 6 pixels
    labels[9, 9] = 3  # one pixel: cannot be on both sides
    with pytest.warns(UserWarning, match=r"class 3 \(1 labelled pixel\) .*no training pixel"):
        split = per_class_split(labels, train_size=0.1, seed=0)
    assert split.params["classes_missing"] == {"train": [3], "test": []}
    np.testing.assert_array_equal(_per_class(split.train, labels), [5, 3, 0])
    np.testing.assert_array_equal(_per_class(split.test, labels), [35, 3, 1])


def test_per_class_gives_a_small_class_one_training_pixel_even_without_a_minimum():
    labels = np.zeros((10, 10), np.int64)
    labels[:4] = 1
    labels[9, :3] = 2  # 10% of 3 pixels rounds to none
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every class is on both sides: no warning
        split = per_class_split(labels, train_size=0.1, min_train_per_class=0, seed=0)
    np.testing.assert_array_equal(_per_class(split.train, labels), [4, 1])
    np.testing.assert_array_equal(_per_class(split.test, labels), [36, 2])


def test_per_class_is_reproducible_from_its_seed(pines_labels):
    a, b = (per_class_split(pines_labels, 0.05, 0.2, seed=7) for _ in range(2))
    c = per_class_split(pines_labels, 0.05, 0.2, seed=8)
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.train, c.train)


def _window_has_test(split: Split, labels: np.ndarray, patch_size: int) -> int:
    """Brute force: count training/validation pixels whose window holds a test pixel."""
    test = np.zeros(labels.shape, bool)
    test.flat[split.test] = True
    # a window centred on (r, c) spans r - p // 2 .. r + (p - 1) // 2 (both conventions covered)
    half = patch_size // 2
    leaks = 0
    for idx in np.concatenate([split.train, split.val]):
        r, c = divmod(int(idx), labels.shape[1])
        window = test[max(r - half, 0) : r + half + 1, max(c - half, 0) : c + half + 1]
        leaks += bool(window.any())
    return leaks


@pytest.mark.parametrize("patch_size", [1, 5, 9, 15, 27])
def test_spatially_disjoint_no_training_window_holds_a_test_pixel(pines_labels, patch_size):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small classes may miss a side; asserted below
        split = spatially_disjoint_split(
            pines_labels, block_size=16, patch_size=patch_size, val_fraction=0.2, seed=0
        )
    _assert_sound(split, pines_labels)
    assert split.train.size > 1000 and split.test.size > 1000 and split.val.size > 0
    assert _window_has_test(split, pines_labels, patch_size) == 0
    # validation is kept apart from training by the same buffer
    val_only = Split(split.train, np.array([], np.int64), split.val, "x", 0)
    assert _window_has_test(val_only, pines_labels, patch_size) == 0
    assert split.params["buffer"] == patch_size // 2
    # every class on the training side is either trained on or reported missing
    missing = split.params["classes_missing"]
    trained = set(np.unique(pines_labels.ravel()[split.train]).tolist())
    assert trained | set(missing["train"]) == set(range(1, 17))


def test_spatially_disjoint_assigns_whole_blocks(pines_labels):
    block = 8
    with pytest.warns(UserWarning, match=r"classes missing per set"):
        split = spatially_disjoint_split(pines_labels, block_size=block, patch_size=1, seed=2)
    test = np.zeros(pines_labels.shape, bool)
    test.flat[split.test] = True
    labelled = pines_labels > 0
    for r in range(0, 145, block):
        for c in range(0, 145, block):
            in_block = test[r : r + block, c : c + block][labelled[r : r + block, c : c + block]]
            assert in_block.all() or not in_block.any()
    # without a buffer, every class found in two or more blocks lands on both sides
    block_ids = (np.arange(145) // block)[:, None] * 1000 + (np.arange(145) // block)[None, :]
    single = [k for k in range(1, 17) if np.unique(block_ids[pines_labels == k]).size == 1]
    missing = split.params["classes_missing"]
    assert sorted(missing["train"] + missing["test"]) == single == [7]
    share = _per_class(split.test, pines_labels) / np.bincount(pines_labels.ravel())[1:]
    assert 0.3 < np.median(share) < 0.7
    assert split.train.size + split.test.size == 10_249  # patch 1: nothing lost to a buffer


def test_spatially_disjoint_is_reproducible_and_seed_dependent(pines_labels):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small classes miss the validation side
        a, b = (spatially_disjoint_split(pines_labels, 12, 0.4, 5, 0.1, seed=4) for _ in range(2))
        c = spatially_disjoint_split(pines_labels, 12, 0.4, 5, 0.1, seed=5)
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.test, c.test)


def test_class_in_a_single_block_is_reported():
    labels = np.zeros((32, 32), np.int64)
    labels[:, :16] = 1
    labels[:, 16:] = 2
    labels[2, 2] = 3  # one pixel: cannot be on both sides
    with pytest.warns(UserWarning, match=r"classes missing per set"):
        split = spatially_disjoint_split(labels, block_size=8, patch_size=1, seed=0)
    missing = split.params["classes_missing"]
    assert 3 in missing["train"] + missing["test"]
    assert not {1, 2} & set(missing["train"] + missing["test"])


@pytest.mark.parametrize("suffix", [".npz", ".json"])
def test_save_load_round_trip(pines_labels, tmp_path, suffix):
    split = make_split(pines_labels, "spatially_disjoint", seed=1, block_size=10, patch_size=3)
    path = tmp_path / f"split{suffix}"
    split.save(path)
    loaded = Split.load(path)
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(split, name))
        assert getattr(loaded, name).dtype == np.int64
    assert (loaded.protocol, loaded.seed, loaded.params, loaded.shape) == (
        split.protocol,
        split.seed,
        split.params,
        split.shape,
    )
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    # recreating from the recorded protocol, seed and params gives the same split
    params = {k: v for k, v in loaded.params.items() if k not in ("buffer", "classes_missing")}
    again = make_split(pines_labels, loaded.protocol, loaded.seed, **params)
    np.testing.assert_array_equal(again.test, split.test)


def test_bad_arguments_are_clear(pines_labels, tmp_path):
    with pytest.raises(ValueError, match=r"Unknown split protocol 'random'"):
        make_split(pines_labels, "random", 0)
    with pytest.raises(TypeError, match=r"does not take \['patch_size'\]"):
        make_split(pines_labels, "per_class", 0, patch_size=3)
    with pytest.raises(ValueError, match=r"train_size=1.5: a fraction must lie in \(0, 1\)"):
        per_class_split(pines_labels, train_size=1.5)
    with pytest.raises(ValueError, match=r"patch_size=0"):
        spatially_disjoint_split(pines_labels, patch_size=0)
    with pytest.raises(ValueError, match=r"no labelled pixel"):
        per_class_split(np.zeros((4, 4), np.int64))
    with pytest.raises(ValueError, match=r"save a split as .npz or .json"):
        per_class_split(pines_labels).save(tmp_path / "split.pkl")
    with pytest.raises(ValueError, match=r"made for a \(145, 145\) raster"):
        per_class_split(pines_labels).validate(pines_labels[:100])
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match=r"bad.json is not a readable split"):
        Split.load(tmp_path / "bad.json")
