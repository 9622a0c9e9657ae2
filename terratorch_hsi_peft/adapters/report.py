"""How much of a model is trained, and how large its adapter file is."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from terratorch_hsi_peft.adapters.inject import adapter_layers
from terratorch_hsi_peft.adapters.io import adapter_file_bytes

__all__ = ["TrainableParameterReport", "trainable_parameter_report"]


@dataclass(frozen=True)
class TrainableParameterReport:
    """Trainable-parameter summary of an adapted model.

    Attributes:
        trainable: parameters with ``requires_grad`` in the model (adapters, plus e.g. a head).
        adapter: parameters of the adapter factors.
        backbone_total: parameters of the backbone without its adapters (the pretrained size).
        percent: ``100 * trainable / backbone_total``.
        adapter_file_bytes: exact size of the file ``save_adapters`` writes (with ``include``).
    """

    trainable: int
    adapter: int
    backbone_total: int
    percent: float
    adapter_file_bytes: int

    def __str__(self) -> str:
        rows = [
            ("trainable parameters", f"{self.trainable:,}"),
            ("  of which adapters", f"{self.adapter:,}"),
            ("backbone parameters", f"{self.backbone_total:,}"),
            ("trainable / backbone", f"{self.percent:.4f} %"),
            (
                "adapter file",
                f"{self.adapter_file_bytes:,} bytes ({self.adapter_file_bytes / 2**20:.3f} MiB)",
            ),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def trainable_parameter_report(
    model: nn.Module,
    backbone: nn.Module | None = None,
    include: Sequence[str] = (),
    base_model_name: str | None = None,
) -> TrainableParameterReport:
    """Count trainable parameters of ``model`` against the size of ``backbone``.

    Args:
        model: the adapted model (a backbone, or a full model holding one and a head).
        backbone: the module whose pretrained size is the reference; defaults to ``model``.
        include: passed to ``save_adapters`` when sizing the file (e.g. ``["head"]``).
        base_model_name: passed to ``save_adapters`` when sizing the file (it is in the metadata).
    """
    backbone = model if backbone is None else backbone
    adapter_ids = {
        id(p)
        for layer in adapter_layers(model).values()
        for p in layer.adapter_parameters().values()
    }
    backbone_adapter_ids = {
        id(p)
        for layer in adapter_layers(backbone).values()
        for p in layer.adapter_parameters().values()
    }
    params = list(model.parameters())  # parameters() yields each shared tensor once
    trainable = sum(p.numel() for p in params if p.requires_grad)
    adapter = sum(p.numel() for p in params if id(p) in adapter_ids)
    backbone_total = sum(
        p.numel() for p in backbone.parameters() if id(p) not in backbone_adapter_ids
    )
    return TrainableParameterReport(
        trainable=trainable,
        adapter=adapter,
        backbone_total=backbone_total,
        percent=100.0 * trainable / backbone_total,
        adapter_file_bytes=adapter_file_bytes(model, include, base_model_name),
    )
