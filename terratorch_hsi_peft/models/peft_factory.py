"""``PEFTEncoderDecoderFactory``: TerraTorch's EncoderDecoderFactory plus the plugin's adapters.

In a TerraTorch YAML, switching an encoder-decoder pipeline to adapters takes two lines::

    model_factory: PEFTEncoderDecoderFactory
    model_args:
      ...                                   # unchanged EncoderDecoderFactory arguments
      peft_config:
        method: KRONA_PLUS                  # a registered method (adapters.registry.method_names())
        replace_qkv: null                   # e.g. qkv for a fused-qkv ViT such as Prithvi
        peft_config_kwargs: {target_modules: [attn.q, attn.v], lr_ratio: 16}
        adapter_path: null                  # start from an adapters.safetensors
        check_base: true                    # its base weights must be this model's

See :mod:`terratorch_hsi_peft.adapters.config` for the keys and the ``hf`` backend.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch.utilities import rank_zero_info
from terratorch.models.encoder_decoder_factory import EncoderDecoderFactory
from terratorch.models.model import Model, ModelFactory
from torch import nn

from terratorch_hsi_peft.adapters.config import PeftSpec
from terratorch_hsi_peft.adapters.io import ORIGIN_ATTR, carry_origin, random_init_origin
from terratorch_hsi_peft.adapters.registry import find_method, hf_peft_methods
from terratorch_hsi_peft.models.adapter_file import load_model_adapters
from terratorch_hsi_peft.models.cli_arguments import config_files
from terratorch_hsi_peft.models.peft_model import apply_peft_to_model
from terratorch_hsi_peft.models.spectral_path import with_spectral_path
from terratorch_hsi_peft.models.spectral_path_spec import SpectralPathSpec
from terratorch_hsi_peft.models.summary import peft_summary
from terratorch_hsi_peft.registry import register_model_factory
from terratorch_hsi_peft.terratorch_compat import guard_stock_peft, install_or_warn
from terratorch_hsi_peft.utils.cli_values import cli_typed

__all__ = ["PEFTEncoderDecoderFactory"]


def _refuse_plugin_methods(get_peft_backbone: Callable) -> Callable:
    """Wrap TerraTorch's ``get_peft_backbone`` (used by ``EncoderDecoderFactory``) so that a
    method of this plugin is a clear error naming the factory to use instead of a KeyError."""
    if getattr(get_peft_backbone, "_refuses_plugin_methods", False):  # module reloaded
        return get_peft_backbone

    @functools.wraps(get_peft_backbone)
    def guarded(peft_config: dict[str, Any], backbone: nn.Module) -> nn.Module:
        method = peft_config.get("method") if isinstance(peft_config, Mapping) else None
        # Methods only the plugin has: under TerraTorch's own factory they end in a KeyError. A
        # name Hugging Face peft owns (the method declares the clash, known also when peft is
        # not installed) stays TerraTorch's, with its own "pip install terratorch[peft]".
        plugin = find_method(method)
        plugin_only = plugin is not None and plugin.hf_peft_name_clash is None
        if plugin_only and plugin.name not in hf_peft_methods():
            raise ValueError(
                f"peft_config method {method!r} is a terratorch-hsi-peft method, which "
                "TerraTorch's EncoderDecoderFactory cannot apply (it only knows Hugging Face peft "
                "methods). "
                "Set model_factory: PEFTEncoderDecoderFactory (the rest of model_args stays)."
            )
        return get_peft_backbone(peft_config, backbone)

    guarded._refuses_plugin_methods = True
    return guarded


install_or_warn(
    lambda: guard_stock_peft(_refuse_plugin_methods),
    "Until then a plugin method under EncoderDecoderFactory fails with TerraTorch's own error "
    "instead of naming PEFTEncoderDecoderFactory.",
)


@register_model_factory
class PEFTEncoderDecoderFactory(ModelFactory):
    """Builds what ``EncoderDecoderFactory`` builds, then puts adapters on the encoder.

    Encoder base weights are frozen; adapters, necks, decoder and heads train. Under
    ``freeze_backbone: true`` the adapters stay trainable (the flag freezes the base weights,
    which PEFT freezes anyway). Without ``peft_config`` it is ``EncoderDecoderFactory`` (full
    fine-tuning).
    """

    # Dotted CLI overrides of model_args arrive as strings ("9", "false"): read them as YAML once,
    # here, so the code below gets typed values ("null" for peft_config: full fine-tuning).
    @cli_typed(skip=("task", "backbone", "decoder"))
    def build_model(
        self,
        task: str,
        backbone: str | nn.Module | None = None,
        decoder: str | nn.Module | None = None,
        peft_config: dict[str, Any] | str | None = None,
        spectral_path: dict[str, Any] | int | None = None,
        **kwargs: Any,
    ) -> Model:
        """Build the model of ``EncoderDecoderFactory.build_model`` with adapters.

        Args:
            task, backbone, decoder, **kwargs: exactly as for ``EncoderDecoderFactory``
                (``backbone_*``, ``decoder_*``, ``head_*``, ``necks``, ``num_classes``, ...).
                String values that read as YAML booleans, null or numbers are converted, so
                dotted command-line overrides such as
                ``--model.init_args.model_args.backbone_pretrained false`` work (see
                :mod:`terratorch_hsi_peft.utils.cli_values`).
                ``num_classes`` is the exception: the stock task reads it before any factory
                runs, so set it in a copy of the task file (docs/configuration.md).
            peft_config: ``method``, ``backend``, ``replace_qkv``, ``peft_config_kwargs``,
                ``adapter_path``, ``check_base`` (see
                :class:`~terratorch_hsi_peft.adapters.config.PeftSpec`), or the path of a
                YAML file holding them (``configs/methods/<method>.yaml``).
            spectral_path: a path from each pixel's spectrum to the head, as the mapping
                ``{width, bands, loss, window}`` (``width`` alone: short for ``{width: ...}``;
                see :class:`~terratorch_hsi_peft.models.spectral_path_spec.SpectralPathSpec`):
                every pixel for segmentation
                (:class:`~terratorch_hsi_peft.models.spectral_path.SpectralPathModel`), the
                patch's centre pixel for classification
                (:class:`~terratorch_hsi_peft.models.spectral_path.SpectralPathClassifier`).
                ``width``: its hidden width; ``bands``: it reads this many bands appended after
                the encoder's (the datamodule's ``append_spectra: true``), else the encoder's
                input (``backbone_num_bands`` or ``backbone_in_channels`` bands); ``loss``: the
                model also outputs the path's own logits as the auxiliary head
                ``spectral_path``, trained by the task's ``aux_loss: {spectral_path: <weight>}``;
                ``window`` (segmentation only): its output is averaged over each pixel's
                ``window x window`` neighbours (odd; 1: none), a spatial prior that holds in
                areas not trained on, refused at the first batch when at least twice a tile's
                side, warned about when wider than a side (docs/segmentation.md). None: no
                path, the stock model.

        Raises:
            TypeError: unknown ``peft_config`` or ``peft_config_kwargs`` keys, or no
                ``backbone`` (a later ``--config`` replaced the task's ``model_args``).
            ValueError: an unknown method, targets matching no module, an adapter file that
                does not fit the model, or a bad ``spectral_path`` (the flat
                ``spectral_path_*`` keys of earlier releases included).
        """
        if backbone is None:
            raise TypeError(_no_backbone_message(peft_config is not None, sys.argv))
        path = SpectralPathSpec.from_model_args({"spectral_path": spectral_path, **kwargs})
        factory = EncoderDecoderFactory()
        if peft_config is None:
            return _with_spectral_path(
                factory.build_model(task, backbone, decoder, **kwargs), path, kwargs
            )
        spec = PeftSpec.parse(peft_config)
        if spec.backend_note is not None:
            rank_zero_info(spec.backend_note)
        # TerraTorch applies Hugging Face peft itself; the plugin's adapters go on afterwards.
        model = factory.build_model(
            task, backbone, decoder, peft_config=spec.hf_peft_config, **kwargs
        )
        model = _with_spectral_path(model, path, kwargs)
        apply_peft_to_model(model, spec)
        _record_origin(model, backbone, kwargs)
        if spec.adapter_path is not None:
            load_model_adapters(model, spec.adapter_path, check_base=spec.check_base)
        # Lightning's own logger: shown on the console by default, rank zero only.
        rank_zero_info(peft_summary(model))
        return model


def _no_backbone_message(has_peft_config: bool, argv: Sequence[str]) -> str:
    """Why ``model_args`` lacks ``backbone``: most often a later ``--config`` replaced it."""
    message = "model_args has no 'backbone'"
    replaced = _last_config_setting_model_args(argv)
    if has_peft_config:
        message += " but has a peft_config"
    if replaced is not None:
        message += (
            f": the later --config {replaced} sets model_args, and TerraTorch's model_args "
            "(an untyped dict) is replaced whole by the last file that sets it, not merged"
        )
    else:
        message += (
            ": a later --config that sets model_args replaces the task file's whole model_args "
            "(an untyped dict, not merged)"
        )
    return (
        message + ". Give the method with --model.init_args.model_args.peft_config "
        "configs/methods/<method>.yaml (a path or a mapping adds that one key), or run a "
        "complete experiment file: terratorch fit -c configs/experiments/<task>/<method>.yaml "
        "(docs/configuration.md)."
    )


def _last_config_setting_model_args(argv: Sequence[str]) -> str | None:
    """The last ``--config``/``-c`` file of ``argv`` that sets ``model.init_args.model_args``."""
    found = None
    for value in config_files(argv):
        try:
            config = yaml.safe_load(Path(value).read_text())
        except (OSError, yaml.YAMLError):  # only a hint is lost
            continue
        model = config.get("model") if isinstance(config, dict) else None
        init_args = model.get("init_args") if isinstance(model, dict) else None
        if isinstance(init_args, dict) and "model_args" in init_args:
            found = value
    return found


def _with_spectral_path(
    model: Model, spec: SpectralPathSpec | None, kwargs: dict[str, Any]
) -> Model:
    """``model`` with the spectral path ``spec`` (None: as is)."""
    if spec is None:
        return model
    bands = kwargs.get("backbone_num_bands", kwargs.get("backbone_in_channels"))
    if bands is None:
        bands = getattr(model.encoder, "num_bands", None)
    if bands is None:
        raise ValueError(
            "spectral_path needs the number of input bands; set model_args.backbone_num_bands "
            "(or backbone_in_channels) to the bands the datamodule gives."
        )
    return with_spectral_path(model, bands, spec)


def _record_origin(model: nn.Module, backbone: str | nn.Module, kwargs: dict[str, Any]) -> None:
    """Name where the base weights came from, for adapter files, when the backbone does not
    (SpectralGPT backbones record their checkpoint or seed themselves)."""
    if any(isinstance(getattr(m, ORIGIN_ATTR, None), str) for m in model.modules()):
        return
    name = backbone if isinstance(backbone, str) else type(backbone).__name__
    ckpt, pretrained = kwargs.get("backbone_ckpt_path"), kwargs.get("backbone_pretrained")
    if ckpt is not None:
        origin = f"{name}, checkpoint {ckpt}"
    elif pretrained:
        origin = f"{name}, pretrained weights"
    elif pretrained is None:
        origin = f"{name}, its default weights ({random_init_origin()} if random)"
    else:
        origin = f"{name}, {random_init_origin()}"
    carry_origin(model, origin)  # a resumed run takes the origin its checkpoint records
