"""BalancedClassWeights: loss weights from the training labels, set on the task when fit starts.

The weights used to be a datamodule option that changed the task's loss from
``train_dataloader()``; that option now fails with a message naming the callback.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.utils.class_weight import compute_class_weight
from terratorch.datamodules.dummy_datamodule import DummyDataModule
from tiny_task import cpu_trainer, tiny_task

from terratorch_hsi_peft.callbacks import BalancedClassWeights
from terratorch_hsi_peft.datamodules import HyperspectralPatchDataModule
from terratorch_hsi_peft.datasets import HyperspectralScene


def _datamodule(train_size: float | int = 0.3) -> HyperspectralPatchDataModule:
    rng = np.random.default_rng(0)
    labels = rng.choice([1, 2, 3], p=[0.7, 0.2, 0.1], size=(20, 20))  # imbalanced
    scene = HyperspectralScene(rng.normal(size=(20, 20, 5)), labels, class_names=["a", "b", "c"])
    return HyperspectralPatchDataModule(
        scene=scene,
        split={"protocol": "per_class", "seed": 0, "train_size": train_size, "val_size": 0.2},
        band_route="standardize",
        patch_size=3,
        img_size=8,
        batch_size=64,
    )


def test_fit_weights_the_loss_by_the_training_counts():
    dm, task = _datamodule(), tiny_task()
    assert task.criterion.weight is None
    cpu_trainer([BalancedClassWeights()]).fit(task, dm)
    targets = dm.targets(dm.split.train)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=targets)
    np.testing.assert_allclose(task.criterion.weight.numpy(), expected, rtol=1e-6)
    assert expected.max() > 2 * expected.min()  # the scene is imbalanced: the weights differ
    # Not saved: the checkpoint loads into a task built without the weights.
    assert "criterion.weight" not in task.state_dict()


def test_a_resumed_fit_weights_by_the_checkpoint_split(tmp_path):
    trained = _datamodule()
    trainer = cpu_trainer([BalancedClassWeights()])
    trainer.fit(tiny_task(), trained)
    checkpoint = tmp_path / "run.ckpt"
    trainer.save_checkpoint(checkpoint)
    # Configured now: 10 training pixels per class, whose weights would all be 1.
    resumed, task = _datamodule(train_size=10), tiny_task()
    trainer = cpu_trainer([BalancedClassWeights()], max_steps=2)
    with pytest.warns(UserWarning, match="replaces the configured one"):
        trainer.fit(task, resumed, ckpt_path=checkpoint)
    expected = trained.class_weight_values()
    assert len(set(expected)) == 3  # the restored split's weights differ from all-ones
    np.testing.assert_allclose(task.criterion.weight.numpy(), expected, rtol=1e-6)


def test_validate_alone_weights_the_loss_as_fit_does():
    dm, task = _datamodule(), tiny_task()
    cpu_trainer([BalancedClassWeights()]).validate(task, dm)
    np.testing.assert_allclose(task.criterion.weight.numpy(), dm.class_weight_values(), rtol=1e-6)


def test_without_the_callback_the_loss_is_unweighted():
    dm, task = _datamodule(), tiny_task()
    cpu_trainer([]).fit(task, dm)
    assert task.criterion.weight is None


@pytest.mark.parametrize(
    ("task_args", "message"),
    [
        ({"loss": "focal"}, r"task's loss is FocalLoss; set the task's loss: ce"),
        ({"class_weights": [1.0, 2.0, 3.0]}, r"task has class_weights and BalancedClassWeights"),
    ],
)
def test_misuse_names_the_fix(task_args, message):
    with pytest.raises(ValueError, match=message):
        cpu_trainer([BalancedClassWeights()]).fit(tiny_task(**task_args), _datamodule())


def test_another_datamodule_names_the_plugin_ones():
    dm = DummyDataModule(
        batch_size=2, num_workers=0, train_samples=2, val_samples=2, test_samples=2,
        channels=5, height=8, width=8, num_classes=3,
    )  # fmt: skip
    with pytest.raises(TypeError, match=r"HyperspectralPatchDataModule .* DummyDataModule"):
        cpu_trainer([BalancedClassWeights()]).fit(tiny_task(), dm)


@pytest.mark.parametrize("value", [True, False])
def test_the_removed_datamodule_option_names_the_callback(value):
    with pytest.raises(
        ValueError, match=r"(?s)class_weights option was removed.*BalancedClassWeights"
    ):
        HyperspectralPatchDataModule(scene=_datamodule().scene, class_weights=value)
