"""SpectralGPT backbones registered with TerraTorch: ``spectralgpt_vit_{base,large,huge}``.

One factory per size, as timm's, each with its full typed signature. The arguments are declared
once: the encoder's by :class:`SpectralGPTEncoder`, the checkpoint's by
:func:`checkpoint_to_load`; the sizes differ only in :data:`SIZES` (and :data:`RELEASED`), and
:func:`sized_factory` makes each size's factory from them. In a TerraTorch YAML every
``backbone_<name>`` key of ``model_args`` reaches them as the keyword ``<name>``. Unknown keys
are a TypeError that lists the valid ones, and strings that dotted command-line overrides leave
(``"false"``, ``"2"``) are read as YAML scalars.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar

from terratorch_hsi_peft.backbones.checkpoint import (
    SPECTRALGPT_PLUS_URL,
    check_sha256_option,
    load_checkpoint,
)
from terratorch_hsi_peft.backbones.spectralgpt import SIZES, SpectralGPTEncoder
from terratorch_hsi_peft.registry import register_backbone
from terratorch_hsi_peft.utils.cli_values import TEXT_OPTIONS, cli_scalars

__all__ = ["spectralgpt_vit_base", "spectralgpt_vit_huge", "spectralgpt_vit_large"]

ModelT = TypeVar("ModelT")

#: The sizes with released weights, which ``pretrained=True`` loads.
RELEASED = {"base": SPECTRALGPT_PLUS_URL}


def keyword_parameters(
    declaration: Callable[..., Any],
    *,
    defaults: Mapping[str, Any] | None = None,
    leave_out: Collection[str] = (),
) -> list[inspect.Parameter]:
    """The arguments ``declaration`` (a function, or a class for its constructor) takes by name.

    As keyword-only parameters with their annotations evaluated (real types, whatever module
    they are used in) and ``defaults`` in place of the declared defaults. Positional-only
    parameters, ``*args``, ``**kwargs`` and the names in ``leave_out`` are left out.
    """
    defaults = defaults or {}
    return [
        p.replace(kind=p.KEYWORD_ONLY, default=defaults.get(p.name, p.default))
        for p in inspect.signature(declaration, eval_str=True).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in leave_out
    ]


def argument_docs(*declarations: Callable[..., Any]) -> dict[str, str]:
    """The ``Args:`` entries of the declarations' docstrings, by name: the text after
    ``name:``, continuation lines included (a later declaration's entry wins)."""
    docs: dict[str, str] = {}
    for declaration in declarations:
        section = re.search(r"^Args:\n((?:    .*\n?|\n)+)", inspect.getdoc(declaration) or "", re.M)
        for entry in re.findall(
            r"^    (\w+: .*(?:\n {8}.*)*)", section[1] if section else "", re.M
        ):
            name, text = entry.split(": ", 1)
            docs[name] = text
    return docs


def sized_factory(
    family: str,
    size: str,
    *,
    module: str,
    construct: Callable[..., ModelT],
    load: Callable[[ModelT, str, str | None], object],
    parameters: Sequence[inspect.Parameter],
    docs: Mapping[str, str],
    where: str,
    summary: str,
) -> Callable[..., ModelT]:
    """The factory ``<family>_<size>`` of ``module``: ``construct(**arguments)``, then ``load``
    the checkpoint that :func:`checkpoint_to_load` names into it.

    Its arguments are the checkpoint's (those of :func:`checkpoint_to_load`) and ``parameters``
    (``construct``'s, with the size's defaults), typed: they are its signature (what
    ``inspect.signature``, ``help`` and jsonargparse show), and ``construct`` receives them all,
    the defaults filled in. Its docstring is ``summary`` (``{size}``: "Base", ...), the size's
    weights and an ``Args:`` section from ``docs`` and :func:`checkpoint_to_load`'s. An unknown
    name is a TypeError that lists the arguments (``where`` says how they are spelled in YAML),
    instead of Python's bare "unexpected keyword argument"; strings that dotted CLI overrides
    leave are read as YAML scalars ("false" is False), while file names and digests
    (``TEXT_OPTIONS``) stay strings.

    Raises:
        KeyError: an argument that no docstring describes (when the module is imported).
    """
    name = f"{family}_{size}"
    checkpoint_parameters = keyword_parameters(checkpoint_to_load)
    signature = [*checkpoint_parameters, *parameters]
    defaults = {p.name: p.default for p in signature}

    def factory(**kwargs: Any) -> ModelT:
        unknown = sorted(set(kwargs) - set(defaults))
        if unknown:
            raise TypeError(
                f"{name} got unknown argument(s) {unknown}. Valid arguments ({where}): "
                f"{sorted(defaults)}."
            )
        arguments = {**defaults, **cli_scalars(kwargs, name, text=TEXT_OPTIONS)}
        options = {p.name: arguments.pop(p.name) for p in checkpoint_parameters}
        checkpoint = checkpoint_to_load(name, RELEASED.get(size), **options)
        model = construct(**arguments)
        if checkpoint is not None:
            load(model, checkpoint, options["ckpt_sha256"])
        return model

    weights = (
        "``pretrained=True`` loads the released SpectralGPT+ checkpoint."
        if size in RELEASED
        else "No weights were released for this size: ``pretrained=True`` is an error, "
        "``ckpt_path`` loads your own."
    )
    docs = {**argument_docs(checkpoint_to_load), **docs}
    args = "".join(f"\n    {p.name}: {docs[p.name]}" for p in signature)
    if inspect.isclass(construct):
        returns = construct
    else:
        returns = inspect.signature(construct, eval_str=True).return_annotation
    factory.__name__ = factory.__qualname__ = name
    factory.__module__ = module  # where it is bound, for help() and pickle
    factory.__doc__ = f"{summary.format(size=size.capitalize())}\n\n{weights}\n\nArgs:{args}"
    factory.__signature__ = inspect.Signature(signature, return_annotation=returns)  # type: ignore[attr-defined]
    return factory


def checkpoint_to_load(
    name: str,
    official_url: str | None,
    /,
    *,
    pretrained: bool = False,
    ckpt_path: str | None = None,
    ckpt_sha256: str | None = None,
) -> str | None:
    """The checkpoint factory ``name`` loads: ``ckpt_path``, else ``official_url`` when
    ``pretrained``.

    Its keyword arguments are those of every SpectralGPT factory that choose its weights.

    Args:
        pretrained: load the size's released weights when no ``ckpt_path`` is given:
            SpectralGPT+ (Zenodo record 8412455) for base; the other sizes have none.
        ckpt_path: a local checkpoint or an http(s) URL (cached under
            ``$TERRATORCH_HSI_PEFT_CACHE`` or ``torch.hub.get_dir()/checkpoints``, downloaded
            atomically, one folder per URL); loaded whenever given.
        ckpt_sha256: the checkpoint's expected sha256, checked when given (also against a file
            already in the cache, which is downloaded again if it differs).

    Raises:
        ValueError: ``pretrained`` for a size without released weights, or a ``ckpt_sha256``
            without a checkpoint or that is no hex digest.
    """
    if pretrained and ckpt_path is None:
        if official_url is None:
            raise ValueError(
                f"No pretrained weights were released for {name}; set ckpt_path to your own "
                "checkpoint or use pretrained: false."
            )
        ckpt_path = official_url
    check_sha256_option(name, ckpt_path, ckpt_sha256)
    return ckpt_path


def _encoder(*, padding: str = "reflect", **encoder_args: Any) -> SpectralGPTEncoder:
    """The encoder of ``encoder_args``; TerraTorch's model reads ``padding``.

    Args:
        padding: read by TerraTorch's model to pad inputs to a multiple of ``patch_size``;
            unused here.
    """
    del padding  # the encoder has no use for it
    return SpectralGPTEncoder(**encoder_args)


spectralgpt_vit_base, spectralgpt_vit_large, spectralgpt_vit_huge = (
    register_backbone(
        sized_factory(
            "spectralgpt_vit",
            size,
            module=__name__,
            construct=_encoder,
            load=load_checkpoint,
            parameters=[
                *keyword_parameters(SpectralGPTEncoder, defaults=SIZES[size]),
                *keyword_parameters(_encoder),
            ],
            docs=argument_docs(SpectralGPTEncoder, _encoder),
            where="backbone_<name> in YAML",
            summary="SpectralGPT ViT-{size} encoder, a TerraTorch backbone.",
        )
    )
    for size in SIZES
)
