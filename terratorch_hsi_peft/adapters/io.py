"""Adapter files: safetensors with the tuned tensors and metadata checked on loading.

A file holds every adapter factor of the model (stored tensors, i.e. ``P`` of the "+" methods),
optionally the tensors of caller-chosen modules (a head, a decoder), and string metadata:
``format``, ``format_version``, ``library_version``, ``method``, ``peft_config`` (JSON of the
TerraTorch ``peft_config`` dict), ``targets`` (JSON list of adapted layers), ``shapes`` (JSON
``{tensor: shape}``), ``included`` (JSON list of the extra tensors), ``base_model_class``,
``base_model_name``, ``base_weights_sha256`` (see :func:`base_fingerprint`),
``base_weights_sketch`` (JSON ``{layer: sketch}``, see :func:`base_sketch`) and
``base_weights_origin`` (the checkpoint file and its sha256, or "random init, seed N"). Files are
written atomically (temporary file, then ``os.replace``).

Loading checks the metadata (every key present and well formed), refuses NaN/Inf tensors, checks
that the model fits the file and that its adapted layers hold the base weights the adapters were
trained on, in any precision: each layer's sketch must lie within :data:`BASE_TOLERANCE` of the
file's (a float32, bfloat16 or float16 copy of the same weights does; other weights do not). A
file with only ``base_weights_sha256`` (an earlier version) is checked exactly; one without either
loads with a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes
from torch import nn

from terratorch_hsi_peft.adapters.base import SKETCH_SIZE
from terratorch_hsi_peft.adapters.inject import adapter_layers
from terratorch_hsi_peft.utils.download import atomic_write
from terratorch_hsi_peft.utils.finite import check_finite, listed

__all__ = [
    "BASE_TOLERANCE",
    "FORMAT_VERSION",
    "ORIGIN_ATTR",
    "adapter_file_bytes",
    "base_fingerprint",
    "base_sketch",
    "carry_origin",
    "load_adapters",
    "random_init_origin",
    "save_adapters",
    "weights_origin",
]

FORMAT = "terratorch_hsi_peft.adapters"
FORMAT_VERSION = "1"
#: Attribute of a module (e.g. a backbone) that describes where its weights came from.
ORIGIN_ATTR = "weights_origin"
#: Metadata every adapter file carries, and the JSON type of the JSON-valued ones (None: text).
_REQUIRED: dict[str, type | None] = {
    "method": None,
    "peft_config": dict,
    "targets": list,
    "shapes": dict,
    "included": list,
    "base_model_class": None,
    "base_model_name": None,
}
_FINGERPRINT_KEY = "base_weights_sha256"
_SKETCH_KEY = "base_weights_sketch"
_ORIGIN_KEY = "base_weights_origin"
#: Largest relative distance ``||W - W'|| / ||W||`` (estimated per adapted layer from the sketches)
#: at which base weights count as the same. A bfloat16 copy of float32 weights lies at about
#: 0.002 (bfloat16 keeps 8 significant bits), a float16 copy at 0.0002; other weights (another
#: checkpoint or seed) at about 1.
BASE_TOLERANCE = 0.01


def random_init_origin() -> str:
    """``"random init, seed N"`` for weights initialised now: N is Lightning's global seed
    (``PL_GLOBAL_SEED``, set by ``seed_everything``), else torch's initial seed."""
    seed = os.environ.get("PL_GLOBAL_SEED")
    if seed:
        return f"random init, seed {seed}"
    return f"random init, torch seed {torch.initial_seed()}"


def carry_origin(module: nn.Module, origin: str) -> None:
    """Set ``module.weights_origin`` to ``origin`` and make it travel with the module's weights.

    The origin goes into the state dict's per-module metadata (``state_dict._metadata``, which
    torch keeps through ``torch.save``/``load`` and Lightning checkpoints), and loading a state
    dict that records one takes it over: a run resumed from a checkpoint names the origin of the
    weights it restored, not that of the weights it was built with (e.g. under another seed). A
    state dict without the record (an older checkpoint, a plain dict) leaves the origin as is.
    Call it once per module; later changes of the attribute are carried too.
    """
    setattr(module, ORIGIN_ATTR, origin)
    module.register_state_dict_post_hook(_save_origin)
    module.register_load_state_dict_pre_hook(_load_origin)


def _save_origin(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    local_metadata[ORIGIN_ATTR] = getattr(module, ORIGIN_ATTR)


def _load_origin(
    module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict, *_: object
) -> None:
    origin = local_metadata.get(ORIGIN_ATTR)
    if isinstance(origin, str):
        setattr(module, ORIGIN_ATTR, origin)


def weights_origin(model: nn.Module) -> str:
    """Where the weights of ``model`` came from: the ``weights_origin`` of its first module that
    records one (SpectralGPT backbones do: checkpoint file and sha256, or random init and seed)."""
    for module in model.modules():
        origin = getattr(module, ORIGIN_ATTR, None)
        if isinstance(origin, str):
            return origin
    return f"an unrecorded origin ({type(model).__name__})"


def base_fingerprint(model: nn.Module) -> str:
    """sha256 identifying the frozen base weights under the adapters of ``model``.

    Computed from each adapted layer's name and :meth:`AdapterLinear.base_digest` (weight and
    bias as float32 CPU bytes, taken before any merge), so it does not depend on the device or on
    whether the adapters are merged. It identifies the exact values: a float16/bfloat16 copy of
    float32 weights has another fingerprint (:func:`load_adapters` compares :func:`base_sketch`).
    """
    digest = hashlib.sha256()
    for name, layer in sorted(adapter_layers(model).items()):
        digest.update(f"{name}:{layer.base_digest()}\n".encode())
    return digest.hexdigest()


def base_sketch(model: nn.Module) -> dict[str, list[float]]:
    """The :meth:`AdapterLinear.base_sketch` of every adapted layer of ``model``, by name: what
    :func:`load_adapters` compares, with :data:`BASE_TOLERANCE`, so a copy of the same base
    weights in another precision (float32, bfloat16, float16) or on another device matches."""
    return {name: layer.base_sketch() for name, layer in sorted(adapter_layers(model).items())}


def save_adapters(
    model: nn.Module,
    path: str | os.PathLike,
    include: Sequence[str] = (),
    base_model_name: str | None = None,
) -> Path:
    """Write the adapters of ``model`` (and the modules named in ``include``) to ``path``.

    Args:
        model: a model prepared with :func:`apply_peft` (merged or not: factors are unchanged).
        path: destination ``.safetensors`` file; replaced atomically.
        include: module or tensor names of ``model`` to store as well (e.g. ``["head"]``): every
            state-dict tensor whose key equals an entry or starts with ``entry + "."``.
        base_model_name: name of the pretrained model (e.g. ``"spectralgpt_vit_base"``); defaults
            to the model's class name. :func:`load_adapters` can check it.

    Returns:
        The path written.
    """
    data = _serialise(model, include, base_model_name)
    path = Path(path)
    with atomic_write(path) as f:
        f.write(data)
    return path


def adapter_file_bytes(
    model: nn.Module, include: Sequence[str] = (), base_model_name: str | None = None
) -> int:
    """The exact size in bytes of the file :func:`save_adapters` would write."""
    return len(_serialise(model, include, base_model_name))


def load_adapters(
    model: nn.Module,
    path: str | os.PathLike,
    base_model_name: str | None = None,
    check_base: bool = True,
) -> list[str]:
    """Load a file written by :func:`save_adapters` into ``model`` (already prepared by apply_peft).

    The metadata must match the model: method and hyperparameters, the set of adapted layers,
    the base model class (and ``base_model_name`` when given), every tensor's name and shape,
    and the base weights of the adapted layers (:func:`base_fingerprint`).

    Args:
        model: the model, with the same adapters as the one saved.
        path: the adapter file.
        base_model_name: when given, the name the file must record.
        check_base: compare the base weights with the file's record (in any precision: see
            :data:`BASE_TOLERANCE`). Turn it off only to move adapters to other base weights on
            purpose: they were not trained for them.

    Returns:
        The names of the tensors loaded (adapter factors and included tensors).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is unreadable, not an adapter file, has missing or broken metadata
            (the key is named), holds NaN/Inf tensors (named), or does not fit the model (every
            mismatch is listed), or the model's base weights are not the ones the adapters were
            trained on; the model is left unchanged.

    Warns:
        UserWarning: the file does not record its base weights (written by an older version), so
            they cannot be checked.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No adapter file at {path}; check the path.")
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as err:
        raise ValueError(
            f"{path} is not a readable safetensors file ({err}): it is truncated, corrupt or not "
            "an adapter file. Write it again with save_adapters."
        ) from None
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path} has no adapter metadata: it was not written by save_adapters.")
    if "format_version" not in metadata:
        raise ValueError(
            f"{path} lacks the adapter metadata key 'format_version'. The file was damaged or "
            "edited by hand; write it again with save_adapters."
        )
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path} has adapter format version {metadata.get('format_version')!r}; this library "
            f"reads version {FORMAT_VERSION}. Install the terratorch-hsi-peft version that wrote "
            f"it ({metadata.get('library_version')})."
        )
    parsed = _parse_metadata(path, metadata, tensors)
    check_finite(
        tensors,
        str(path),
        "the run that wrote it diverged. It was not loaded; use the adapter file of an earlier "
        "checkpoint, or retrain with a lower learning rate.",
    )
    problems = _mismatches(model, parsed, tensors, base_model_name)
    if problems:
        raise ValueError(
            f"{path} does not fit this model:\n- " + "\n- ".join(problems) + "\nBuild the model "
            f"with the file's configuration: apply_peft(model, {metadata['peft_config']})."
        )
    if check_base:
        _check_base(model, path, metadata)
    result = model.load_state_dict(tensors, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys  # excluded by _mismatches
    return sorted(tensors)


def _serialise(model: nn.Module, include: Sequence[str], base_model_name: str | None) -> bytes:
    layers = adapter_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no adapters; call apply_peft first.")
    tensors = _adapter_tensors(layers)
    extra = _included_tensors(model, include, exclude=tensors)
    tensors.update(extra)
    config = next(iter(layers.values())).config
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": _library_version(),
        "method": config.method.name,
        "peft_config": json.dumps(config.to_peft_config()),
        "targets": json.dumps(sorted(layers)),
        "shapes": json.dumps({key: list(t.shape) for key, t in tensors.items()}),
        "included": json.dumps(sorted(extra)),
        "base_model_class": _class_path(model),
        "base_model_name": base_model_name or type(model).__name__,
        _FINGERPRINT_KEY: base_fingerprint(model),
        _SKETCH_KEY: _sketch_json(base_sketch(model)),
        _ORIGIN_KEY: weights_origin(model),
    }
    cpu = {key: t.detach().to("cpu").contiguous() for key, t in tensors.items()}
    return safetensors_bytes(cpu, metadata=metadata)


def _adapter_tensors(layers: dict) -> dict[str, torch.Tensor]:
    return {
        f"{layer_name}.{name}": p
        for layer_name, layer in layers.items()
        for name, p in layer.adapter_parameters().items()
    }


def _included_tensors(
    model: nn.Module, include: Sequence[str], exclude: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    if isinstance(include, str):
        include = [include]
    state = model.state_dict()
    extra = {}
    for entry in include:
        keys = [k for k in state if k == entry or k.startswith(f"{entry}.")]
        if not keys:
            raise ValueError(
                f"include entry {entry!r} matches no tensor of {type(model).__name__}; name a "
                f"module or tensor of its state dict (e.g. {next(iter(state), 'head')!r})."
            )
        extra.update({k: state[k] for k in keys if k not in exclude})
    return extra


def _parse_metadata(
    path: Path, metadata: dict[str, str], tensors: dict[str, torch.Tensor]
) -> dict[str, object]:
    """The required metadata, JSON values decoded; a ValueError names a missing or broken key."""
    fix = (
        "The file was damaged or edited by hand; write it again with save_adapters (a training "
        "run's AdapterCheckpoint)."
    )
    parsed: dict[str, object] = {}
    for key, kind in _REQUIRED.items():
        if key not in metadata:
            raise ValueError(f"{path} lacks the adapter metadata key {key!r}. {fix}")
        if kind is None:
            parsed[key] = metadata[key]
            continue
        try:
            value = json.loads(metadata[key])
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{path}: adapter metadata {key!r} is not valid JSON ({err}). {fix}"
            ) from None
        if not isinstance(value, kind):
            raise ValueError(
                f"{path}: adapter metadata {key!r} should be a JSON {kind.__name__}, got "
                f"{type(value).__name__}. {fix}"
            )
        parsed[key] = value
    for key in ("targets", "included"):
        if not all(isinstance(name, str) for name in parsed[key]):
            raise ValueError(f"{path}: adapter metadata {key!r} should list names. {fix}")
    config = parsed["peft_config"]
    for key, kind in (("method", str), ("peft_config_kwargs", dict)):
        if not isinstance(config.get(key), kind):
            raise ValueError(
                f"{path}: adapter metadata 'peft_config' lacks {key!r} (a {kind.__name__}). {fix}"
            )
    shapes, recorded = {key: list(t.shape) for key, t in tensors.items()}, parsed["shapes"]
    differing = sorted(k for k in set(shapes) | set(recorded) if shapes.get(k) != recorded.get(k))
    if differing:
        raise ValueError(
            f"{path}: adapter metadata 'shapes' does not describe the tensors the file holds "
            f"(differing: {listed(differing)}). {fix}"
        )
    return parsed


def _check_base(model: nn.Module, path: Path, metadata: dict[str, str]) -> None:
    expected = metadata.get(_FINGERPRINT_KEY)
    recorded_sketch = metadata.get(_SKETCH_KEY)
    if expected is None and recorded_sketch is None:
        warnings.warn(
            f"{path} does not record the base weights its adapters were trained on (written by "
            f"terratorch-hsi-peft {metadata.get('library_version', '?')}), so they cannot be "
            f"checked against this model's ({weights_origin(model)}). If the base differs, "
            "predictions are silently wrong; save the adapters again with this version.",
            UserWarning,
            stacklevel=3,
        )
        return
    actual = base_fingerprint(model)
    if recorded_sketch is not None:
        differing = _differing_layers(path, recorded_sketch, base_sketch(model))
        if not differing:
            return
        layers = listed([f"{name} by {distance:.1%}" for name, distance in differing])
        detail = (
            f"{len(differing)} adapted layer(s) differ by more than {BASE_TOLERANCE:.0%} of "
            f"their norm ({layers}), far more than a float16/bfloat16 copy of the same weights "
            "would (about 0.2%)"
        )
    elif actual == expected:
        return
    else:  # a file of an earlier version: only the exact float32 bytes were recorded
        detail = (
            "the file (from an earlier version) records only the exact weights, so a "
            "float16/bfloat16 copy of the same base differs too; save the adapters again with "
            "this version to check in any precision"
        )
    origin = metadata.get(_ORIGIN_KEY, "an unrecorded origin")
    found = weights_origin(model)
    same = (
        f" Both name the origin {origin!r}: this model's base weights were changed after they "
        "were built (trained, merged with other adapters, or loaded from another state dict)."
        if origin == found
        else ""
    )
    raise ValueError(
        f"{path} was trained on other base weights: the file expects {origin} (fingerprint "
        f"{(expected or 'unrecorded')[:16]}), this model has {found} (fingerprint "
        f"{actual[:16]}); {detail}.{same} Build the backbone from the weights the adapters were "
        "trained on: the same checkpoint (backbone_ckpt_path / backbone_pretrained), or for a "
        "random init the same seed (seed_everything). To move the adapters to other base "
        "weights on purpose, turn the check off: check_base=False in Python, peft_config: "
        "{check_base: false} in YAML. The model was left unchanged."
    )


def _sketch_json(sketches: dict[str, list[float]]) -> str:
    """The sketches as JSON with every number in one fixed width (`` 1.234567890e+02``), so a
    file's size depends on its layers and not on the digits of their weights."""
    layers = (
        f"{json.dumps(name)}: [{', '.join(f'{value: .9e}' for value in values)}]"
        for name, values in sketches.items()
    )
    return "{" + ", ".join(layers) + "}"


def _differing_layers(
    path: Path, recorded: str, sketches: dict[str, list[float]]
) -> list[tuple[str, float]]:
    """``(layer, relative distance)`` of the layers whose base weights differ from the file's
    record by more than :data:`BASE_TOLERANCE`; a ValueError names a broken record."""
    size = 1 + SKETCH_SIZE**2
    try:
        saved = json.loads(recorded)
    except json.JSONDecodeError:
        saved = None
    well_formed = isinstance(saved, dict) and set(saved) == set(sketches)
    if not well_formed or not all(
        isinstance(v, list) and len(v) == size and all(isinstance(x, (int, float)) for x in v)
        for v in saved.values()
    ):
        raise ValueError(
            f"{path}: adapter metadata {_SKETCH_KEY!r} should map every adapted layer to {size} "
            "numbers. The file was damaged or edited by hand; write it again with save_adapters "
            "(a training run's AdapterCheckpoint)."
        )
    differing = []
    for name, (norm, *projections) in sorted(saved.items()):
        current = sketches[name][1:]
        squares = sum((a - b) ** 2 for a, b in zip(projections, current, strict=True))
        distance = (squares / len(current)) ** 0.5 / norm if norm > 0 else float(squares > 0)
        if distance > BASE_TOLERANCE:
            differing.append((name, distance))
    return differing


def _mismatches(
    model: nn.Module,
    metadata: dict[str, object],
    tensors: dict[str, torch.Tensor],
    base_model_name: str | None,
) -> list[str]:
    layers = adapter_layers(model)
    if not layers:
        return [
            f"the model has no adapters (the file holds {metadata.get('method')} adapters); "
            "call apply_peft first"
        ]
    problems = []
    merged = [name for name, layer in layers.items() if layer.merged]
    if merged:
        problems.append(f"adapters are merged ({merged[0]}, ...): call unmerge_adapters first")
    config = next(iter(layers.values())).config.to_peft_config()
    saved = metadata["peft_config"]
    if saved["method"] != config["method"]:
        problems.append(f"method: file {saved['method']}, model {config['method']}")
    if saved.get("replace_qkv") != config["replace_qkv"]:
        problems.append(
            f"replace_qkv: file {saved.get('replace_qkv')!r}, model {config['replace_qkv']!r}"
        )
    saved_kwargs, kwargs = saved["peft_config_kwargs"], config["peft_config_kwargs"]
    for key in sorted((set(saved_kwargs) | set(kwargs)) - {"target_modules"}):
        if saved_kwargs.get(key) != kwargs.get(key):
            problems.append(f"{key}: file {saved_kwargs.get(key)!r}, model {kwargs.get(key)!r}")
    saved_targets, targets = set(metadata["targets"]), set(layers)
    if saved_targets != targets:
        problems.append(
            f"adapted layers differ: only in the file {sorted(saved_targets - targets)[:3]}, "
            f"only in the model {sorted(targets - saved_targets)[:3]}"
        )
    if metadata.get("base_model_class") != _class_path(model):
        problems.append(
            f"base model class: file {metadata.get('base_model_class')}, model {_class_path(model)}"
        )
    if base_model_name is not None and metadata.get("base_model_name") != base_model_name:
        problems.append(
            f"base model name: file {metadata.get('base_model_name')!r}, expected "
            f"{base_model_name!r}"
        )
    state = model.state_dict()
    for key, t in tensors.items():
        if key not in state:
            problems.append(f"tensor {key} of the file is not in the model")
        elif state[key].shape != t.shape:
            problems.append(
                f"tensor {key}: file shape {list(t.shape)}, model {list(state[key].shape)}"
            )
    missing = sorted(set(_adapter_tensors(layers)) - set(tensors))
    if missing:
        problems.append(f"adapter tensors missing from the file: {missing[:3]}")
    return problems


def _class_path(model: nn.Module) -> str:
    cls = type(model)
    return f"{cls.__module__}.{cls.__qualname__}"


def _library_version() -> str:
    try:
        return version("terratorch-hsi-peft")
    except PackageNotFoundError:  # a source tree that was not installed
        return "0.0.0"
