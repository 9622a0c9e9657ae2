"""OA, AA and Cohen's kappa in stock TerraTorch runs, and the test confusion matrix on disk."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import numpy as np
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from matplotlib.figure import Figure

from terratorch_hsi_peft.metrics import AverageAccuracy, CohenKappa, OverallAccuracy
from terratorch_hsi_peft.terratorch_compat import task_metric_collections
from terratorch_hsi_peft.utils.cli_values import task_model_args
from terratorch_hsi_peft.utils.download import atomic_write

__all__ = ["HyperspectralMetrics", "write_confusion_matrix"]

logger = logging.getLogger(__name__)

_ADDED = {"OA": OverallAccuracy, "AA": AverageAccuracy, "Kappa": CohenKappa}


class HyperspectralMetrics(Callback):
    """Adds ``OA``, ``AA`` and ``Kappa`` to a stock task's metrics; writes the confusion matrix.

    Works with TerraTorch's ``ClassificationTask`` and ``SemanticSegmentationTask`` (their
    ``ignore_index`` is honoured). Validation and test then log ``val/OA``, ``val/AA``,
    ``val/Kappa``, ``test/OA``, ``test/AA`` and ``test/Kappa`` next to the stock metrics, which
    already include per-class accuracy (``test/Class_Accuracy_<class>``). OA is the fraction of
    correct pixels, AA the mean per-class accuracy over classes present in the reference, kappa
    Cohen's agreement beyond chance - all from one accumulated confusion matrix.

    At the end of every test run the confusion matrix (rows: true class, columns: predicted) is
    written as ``confusion_matrix_<prefix>.csv`` (counts, class names as headers) and ``.png``
    (row-normalised colours, counts in the cells), atomically.

    Args:
        output_dir: folder for the files; default: the trainer's ``log_dir`` (else its
            ``default_root_dir``).
        class_names: names of class indices 0..K-1; default: the datamodule's ``class_names``,
            then the task's ``class_names``, then the indices.
    """

    def __init__(self, output_dir: str | None = None, class_names: list[str] | None = None):
        super().__init__()
        self.output_dir = output_dir
        self.class_names = class_names
        #: Paths written by the last test run.
        self.written: list[Path] = []

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Add the figures to the task's validation and test metric collections (once)."""
        val, tests = task_metric_collections(pl_module, type(self).__name__)
        num_classes = _num_classes(pl_module)
        ignore_index = pl_module.hparams.get("ignore_index")
        for collection in [val, *tests]:
            missing = {name: cls for name, cls in _ADDED.items() if name not in collection}
            collection.add_metrics(
                {
                    name: cls(num_classes=num_classes, ignore_index=ignore_index)
                    for name, cls in missing.items()
                }
            )
            # add_metrics leaves new metrics on the CPU; the task may already live elsewhere.
            collection.to(pl_module.device)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Write each test collection's confusion matrix (before the task resets its metrics)."""
        self.written = []
        folder = Path(self.output_dir or trainer.log_dir or trainer.default_root_dir)
        names = self._class_names(trainer, pl_module)
        for collection in task_metric_collections(pl_module, type(self).__name__)[1]:
            kappa = collection["Kappa"]
            with kappa.sync_context():  # collective under DDP: every rank takes part
                confmat = kappa.confmat.detach().cpu().numpy().astype(np.int64)
            if confmat.sum() == 0 or not trainer.is_global_zero:
                continue
            stem = "confusion_matrix_" + collection.prefix.strip("/").replace("/", "_")
            self.written += write_confusion_matrix(confmat, names, folder / stem)
        logger.info("Confusion matrices written: %s", [str(p) for p in self.written])

    def _class_names(self, trainer: Trainer, pl_module: LightningModule) -> list[str]:
        num_classes = _num_classes(pl_module)
        for names in (
            self.class_names,
            getattr(trainer.datamodule, "class_names", None),
            pl_module.hparams.get("class_names"),
        ):
            if names is not None and len(names) == num_classes:
                return [str(n) for n in names]
        return [str(i) for i in range(num_classes)]


def _num_classes(pl_module: LightningModule) -> int:
    """The task's ``model_args.num_classes``."""
    value = task_model_args(pl_module.hparams).get("num_classes")
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        found = "has none" if value is None else f"is {value!r}"
        raise ValueError(
            f"HyperspectralMetrics needs a classification or segmentation task with "
            f"model_args.num_classes (an integer >= 2); {type(pl_module).__name__}'s "
            f"model_args.num_classes {found}. Set num_classes in the task's model_args, or "
            "remove the callback from runs without classes (e.g. pre-training with "
            "ReconstructionTask)."
        )
    return value


def write_confusion_matrix(confmat: np.ndarray, class_names: list[str], stem: Path) -> list[Path]:
    """Write ``stem.csv`` (counts) and ``stem.png`` (row-normalised heat map), atomically.

    Returns:
        The two paths written.
    """
    csv_path, png_path = stem.with_suffix(".csv"), stem.with_suffix(".png")
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["true \\ predicted", *class_names])
    for name, row in zip(class_names, confmat, strict=True):
        writer.writerow([name, *row.tolist()])
    with atomic_write(csv_path, "w") as f:
        f.write(text.getvalue())

    k = len(class_names)
    support = confmat.sum(axis=1, keepdims=True)
    share = np.divide(confmat, support, out=np.zeros(confmat.shape), where=support > 0)
    side = min(4 + 0.45 * k, 16)
    fig = Figure(figsize=(side + 1.5, side))
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="share of the true class")
    ax.set_xticks(range(k), class_names, rotation=90, fontsize=7)
    ax.set_yticks(range(k), class_names, fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if k <= 25:  # counts stay legible up to about 25 classes
        for (i, j), count in np.ndenumerate(confmat):
            colour = "white" if share[i, j] > 0.5 else "black"
            ax.text(j, i, str(count), ha="center", va="center", fontsize=6, color=colour)
    fig.tight_layout()
    with atomic_write(png_path) as f:
        fig.savefig(f, format="png", dpi=120)
    return [csv_path, png_path]
