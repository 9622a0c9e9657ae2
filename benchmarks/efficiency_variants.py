"""The models the efficiency benchmark compares, and one training step / inference call of each.

Every variant is the model of the shipped experiment ``configs/experiments/paper/spectralgpt_b/``
(:data:`EXPERIMENT`): SpectralGPT plus the source paper's classification head (the mean of the
last layer's tokens, then an MLP: Linear -> ReLU -> dropout 0.1 -> Linear, hidden width 256),
built by TerraTorch's ``ClassificationTask`` through the plugin's factory. The overrides are the
timed geometry's (:class:`TimedGeometry`: the encoder size, bands, input side, head width and
classes; the full geometry is the file's own) and random weights (speed does not depend on them).
Variants differ only in what is trained:

- ``full``: every parameter (the file ``full.yaml``);
- ``floor``: only the head, but the input requires a gradient, so the backward runs through every
  block down to the input: the cost no adapter on every block can go below;
- every registered method of this library (``KRONA`` ... ``LORA_PLUS``, from
  :func:`~terratorch_hsi_peft.adapters.method_names`; a new method module adds a variant): the
  experiment with the method's shipped ``configs/methods/<method>.yaml`` as ``peft_config``
  (adapters on ``attn.q`` and ``attn.v``, + the head), ``r = alpha = rank`` where it has them;
- ``peft LoRA`` / ``peft LoKr``: Hugging Face ``peft`` on the same targets (+ the head) of the
  ``full`` model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import save as safetensors_bytes
from torch import nn

from benchmarks.experiments import (
    REPO,
    build_model,
    encoder_size,
    load_experiment,
    override,
    quiet,
)
from terratorch_hsi_peft.adapters import (
    adapter_file_bytes,
    get_method,
    merge_adapters,
    method_names,
    unmerge_adapters,
)

__all__ = [
    "EXPERIMENT",
    "FULL_GEOMETRY",
    "OURS",
    "PEFT_VARIANTS",
    "QUICK_GEOMETRY",
    "VARIANTS",
    "TimedGeometry",
    "Variant",
    "autocast",
    "build_variant",
    "model_config",
]

#: The shipped experiment every variant's model is built from (plus the geometry's overrides).
EXPERIMENT = "paper/spectralgpt_b/full"
#: The shipped method files (the ``peft_config`` of each of this library's methods).
METHODS = REPO / "configs" / "methods"
TARGETS = ["attn.q", "attn.v"]
#: This library's methods: every registered one.
OURS = method_names()
#: Every variant, in table order.
VARIANTS = ["full", "floor", *OURS, "peft LoRA", "peft LoKr"]
#: The variants with adapters (merge/unmerge inference applies to them).
PEFT_VARIANTS = [*OURS, "peft LoRA", "peft LoKr"]


@dataclass(frozen=True, kw_only=True)
class TimedGeometry:
    """The model's size and this benchmark's synthetic batch.

    Tokens per image: ``bands / 3 * (img_size / patch_size) ** 2``.
    """

    embed_dim: int
    depth: int
    num_heads: int
    img_size: int
    head_dim: int
    batch: int
    rank: int  # LoRA / LoKr rank
    patch_size: int = 8
    bands: int = 12
    classes: int = 16

    @property
    def tokens(self) -> int:
        return self.bands // 3 * (self.img_size // self.patch_size) ** 2

    def describe(self) -> str:
        return (
            f"{self.depth} blocks, width {self.embed_dim}, {self.num_heads} heads, {self.bands} "
            f"bands at {self.img_size}x{self.img_size} -> {self.tokens} tokens, batch "
            f"{self.batch}, {self.classes} classes, MLP head {self.embed_dim} -> {self.head_dim} "
            f"-> {self.classes}; LoRA/LoKr rank {self.rank}; model built from "
            f"configs/experiments/{EXPERIMENT}.yaml + overrides"
        )


#: SpectralGPT-B on the source paper's 32x32 input (64 tokens), batch 8, and the paper's MLP head
#: width: the experiment file's own model (configs/paper/spectralgpt_b.yaml: head_dim_list [256]).
FULL_GEOMETRY = TimedGeometry(
    embed_dim=768, depth=12, num_heads=12, img_size=32, head_dim=256, batch=8, rank=8
)
#: A tiny model for CI; rank 4 keeps peft's LoKr low-rank (it needs r < 16 / 2 here).
QUICK_GEOMETRY = TimedGeometry(
    embed_dim=256, depth=2, num_heads=4, img_size=16, head_dim=256, batch=2, rank=4
)


def model_config(
    geometry: TimedGeometry, method: str | None = None, seed: int = 0
) -> dict[str, Any]:
    """:data:`EXPERIMENT` with the geometry's overrides; ``method``'s shipped file as peft_config.

    ``method``: one of :data:`OURS` (None: full fine-tuning). Its ``r`` and ``alpha`` are set to
    ``geometry.rank`` where the method has them, so that every method is timed at one rank.
    """
    config = load_experiment(EXPERIMENT)
    encoder_size(
        config, geometry.embed_dim, geometry.depth, geometry.num_heads, geometry.patch_size
    )
    args = "model.init_args.model_args"
    changes: dict[str, Any] = {
        "seed_everything": seed,
        f"{args}.backbone_pretrained": False,  # random weights: the speed does not depend on them
        f"{args}.backbone_num_bands": geometry.bands,
        f"{args}.backbone_img_size": geometry.img_size,
        f"{args}.head_dim_list": [geometry.head_dim],
        f"{args}.num_classes": geometry.classes,
    }
    if method is not None:
        peft_config = yaml.safe_load((METHODS / f"{method.lower()}.yaml").read_text())
        keys = get_method(method).options.option_names()
        kwargs = peft_config.setdefault("peft_config_kwargs", {})
        kwargs.update({key: geometry.rank for key in ("r", "alpha") if key in keys})
        changes[f"{args}.peft_config"] = peft_config
    return override(config, changes)


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` when ``bf16``, else nothing."""
    if bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass
class Variant:
    """A built variant: its model, optimizer and batch, ready to step.

    Attributes:
        name: one of :data:`VARIANTS`.
        model: the experiment's model (TerraTorch's ``ScalarOutputModel``; trainable
            parameters set as the variant requires).
        optimizer: AdamW over the trainable parameters.
        images: the training batch (requires a gradient for ``floor``).
        labels: class labels of the batch.
        backbone_parameters: parameters of the encoder without adapters.
    """

    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    images: torch.Tensor
    labels: torch.Tensor
    backbone_parameters: int

    def train_step(self, bf16: bool) -> None:
        """One optimisation step: forward, cross-entropy, backward, AdamW."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        self.images.grad = None
        with autocast(self.images.device, bf16):
            logits = self.model(self.images).output
        F.cross_entropy(logits.float(), self.labels).backward()
        self.optimizer.step()

    @torch.no_grad()
    def predict(self, bf16: bool) -> torch.Tensor:
        """Inference on the batch (eval mode, no autograd)."""
        self.model.eval()
        with autocast(self.images.device, bf16):
            return self.model(self.images.detach()).output

    @contextlib.contextmanager
    def merged(self) -> Iterator[None]:
        """Fold the adapters into the base weights for the duration of the block."""
        merge, unmerge = _merge_functions(self.name)
        merge(self.model.encoder)
        try:
            yield
        finally:
            unmerge(self.model.encoder)

    def trainable_parameters(self) -> int:
        """Parameters the optimizer updates (adapters or everything, plus the head)."""
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def file_bytes(self) -> int:
        """Size of what must be stored per task on top of the pretrained backbone.

        full: the whole model; floor: the head; ours: the ``save_adapters`` file with the head;
        ``peft``: a safetensors file of peft's adapter state dict and the head.
        """
        model = self.model
        if self.name == "full":
            return len(safetensors_bytes(_cloned(model.state_dict())))
        if self.name == "floor":
            return len(safetensors_bytes(_cloned(model.head.state_dict(prefix="head."))))
        if self.name.startswith("peft"):
            from peft import get_peft_model_state_dict

            tensors = {
                f"encoder.{k}": v for k, v in get_peft_model_state_dict(model.encoder).items()
            }
            tensors.update(model.head.state_dict(prefix="head."))
            return len(safetensors_bytes(_cloned(tensors)))
        return adapter_file_bytes(model, include=["head"])


def build_variant(
    name: str, geometry: TimedGeometry, device: torch.device, seed: int = 0
) -> Variant:
    """Build ``name`` on ``device`` with weights, adapters and batch fixed by ``seed``."""
    if name not in VARIANTS:
        raise ValueError(f"Unknown variant {name!r}; use one of {VARIANTS}.")
    with quiet():  # the factory's adapter summary would land in the benchmark's table
        model = build_model(model_config(geometry, name if name in OURS else None, seed)).model
    # The encoder without adapters: the factory froze all of it but the adapters of ours.
    backbone_parameters = sum(
        p.numel() for p in model.encoder.parameters() if name not in OURS or not p.requires_grad
    )
    model = model.to(device)
    _ADAPTERS[name](model.encoder, geometry)
    torch.manual_seed(seed)
    images = torch.randn(
        geometry.batch, geometry.bands, geometry.img_size, geometry.img_size, device=device
    )
    labels = torch.randint(0, geometry.classes, (geometry.batch,), device=device)
    if name == "floor":
        images.requires_grad_(True)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    return Variant(name, model, optimizer, images, labels, backbone_parameters)


def _hf_peft(kind: str) -> Callable[[nn.Module, TimedGeometry], None]:
    def adapt(encoder: nn.Module, geometry: TimedGeometry) -> None:
        from peft import LoKrConfig, LoraConfig, inject_adapter_in_model

        if kind == "lora":
            config = LoraConfig(r=geometry.rank, lora_alpha=geometry.rank, target_modules=TARGETS)
        else:
            config = LoKrConfig(r=geometry.rank, alpha=geometry.rank, target_modules=TARGETS)
        inject_adapter_in_model(config, encoder)
        for pname, p in encoder.named_parameters():
            p.requires_grad_(f"{kind}_" in pname)

    return adapt


def _frozen(encoder: nn.Module, geometry: TimedGeometry) -> None:
    encoder.requires_grad_(False)


_ADAPTERS: dict[str, Callable[[nn.Module, TimedGeometry], None]] = {
    "full": lambda encoder, geometry: None,
    "floor": _frozen,
    **{method: lambda encoder, geometry: None for method in OURS},  # adapted by the factory
    "peft LoRA": _hf_peft("lora"),
    "peft LoKr": _hf_peft("lokr"),
}


def _merge_functions(name: str) -> tuple[Callable, Callable]:
    if name not in PEFT_VARIANTS:
        raise ValueError(f"{name} has no adapters to merge.")
    if not name.startswith("peft"):
        return merge_adapters, unmerge_adapters
    from peft.tuners.tuners_utils import BaseTunerLayer

    def switch(encoder: nn.Module, merge: bool) -> None:
        for module in encoder.modules():
            if isinstance(module, BaseTunerLayer):
                module.merge() if merge else module.unmerge()

    return (lambda e: switch(e, True)), (lambda e: switch(e, False))


def _cloned(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses views and shared storage: store contiguous CPU copies.
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
