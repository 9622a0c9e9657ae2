"""Spectral paths: each pixel's own spectrum straight to the head, beside the ViT encoder.

A ViT encoder sees a pixel only through its token (e.g. 8x8 pixels x 3 bands): every pixel of a
token gets a blend of the token's spectra and its context. On sparse hyperspectral labels that
lets a model learn the training fields' layout rather than their spectra, which fails on areas
it has not seen (docs/segmentation.md). A spectral path adds an embedding of the pixel's own
spectrum to the decoder's output before the head:

- :class:`SpectralPathModel` (segmentation): at the input's resolution, for every pixel
  (:class:`PixelMLP`: linear, LayerNorm, GELU, linear over each pixel's channels, i.e. 1x1
  convolutions), optionally averaged over each pixel's ``window x window`` neighbours
  (``model_args.spectral_path.window``);
- :class:`SpectralPathClassifier` (classification of the pixel at a patch's centre): for the
  centre pixel (linear, BatchNorm, GELU, linear).

Selected in YAML with ``model_args.spectral_path: {width: <hidden channels>, ...}`` under
``model_factory: PEFTEncoderDecoderFactory`` (any method, or none for full fine-tuning), parsed
into a :class:`~terratorch_hsi_peft.models.spectral_path_spec.SpectralPathSpec`. The path reads
the encoder's (band-routed) input, or, with ``bands: <C>`` and the datamodule's
``append_spectra: true``, each pixel's whole z-scored spectrum appended after the routed bands:
a 12-component PCA keeps too little of a 200-band spectrum to separate the classes
(docs/segmentation.md).

Both wrappers re-implement the stock model's ``forward`` from its parts; what that relies on in
TerraTorch is checked in :func:`terratorch_hsi_peft.terratorch_compat.adopt_stock_model`.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from terratorch.models.model import Model, ModelOutput
from terratorch.models.pixel_wise_model import PixelWiseModel
from terratorch.models.scalar_output_model import ScalarOutputModel
from torch import nn

from terratorch_hsi_peft.models.spectral_path_spec import PATH_HEAD, SpectralPathSpec
from terratorch_hsi_peft.terratorch_compat import (
    adopt_stock_model,
    crop_pixel_wise_output,
    pad_stock_input,
)

__all__ = [
    "PixelMLP",
    "SpectralPathClassifier",
    "SpectralPathModel",
    "check_window",
    "window_average",
    "with_spectral_path",
]


class _SpectralPath:
    """What both wrappers share: checks, adopting the stock model's parts, splitting the input."""

    spectral_path: nn.Sequential
    spec: SpectralPathSpec
    encoder_bands: int

    def _adopt(self, model: Model, stock: type, in_channels: int, spec: SpectralPathSpec) -> int:
        """Check the arguments, take over ``model``'s parts; returns the decoder's width."""
        if not isinstance(in_channels, int) or isinstance(in_channels, bool) or in_channels < 1:
            raise ValueError(
                f"in_channels={in_channels!r} must be a positive integer (the bands of the "
                "encoder's input, model_args.backbone_num_bands)."
            )
        if not isinstance(model, stock):
            raise ValueError(
                f"{type(self).__name__} wraps a {stock.__name__}, but the factory built a "
                f"{type(model).__name__}; remove spectral_path from model_args."
            )
        if len(getattr(model, "aux_heads", ())):
            raise ValueError(
                "spectral_path does not support auxiliary heads (aux_decoders); remove one of them."
            )
        decoder_channels = model.decoder.out_channels
        if not isinstance(decoder_channels, int):
            raise ValueError(
                f"spectral_path needs a decoder with one output (out_channels an int), but "
                f"{type(model.decoder).__name__} has out_channels={decoder_channels!r}."
            )
        # The stock model's parts and settings (public and private), unchanged.
        adopt_stock_model(self, model, stock)
        self.spec = spec
        self.encoder_bands = in_channels
        return decoder_channels

    def _output(self, output: torch.Tensor, path_logits: Any) -> ModelOutput:
        """The model's output, plus the path's own logits (``path_logits()``) as the auxiliary
        head :data:`PATH_HEAD` in training when asked: they are a training signal only, so
        validation, test and predict cost nothing more."""
        if not (self.spec.loss and self.training):
            return ModelOutput(output=output)
        return ModelOutput(output=output, auxiliary_heads={PATH_HEAD: path_logits()})

    def split_input(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(encoder input, path input) of a batch: its routed and appended bands, or x twice.

        Raises:
            ValueError: a batch whose channel count is not the routed plus appended bands.
        """
        spectra = self.spec.bands
        if spectra is None:
            return x, x
        expected = self.encoder_bands + spectra
        if x.shape[1] != expected:
            raise ValueError(
                f"The model expects {self.encoder_bands} routed bands followed by "
                f"{spectra} appended spectral bands ({expected} channels), but the batch "
                f"has {x.shape[1]}. Set the datamodule's append_spectra: true (and "
                "spectral_path.bands to the scene's band count), or remove spectral_path.bands."
            )
        return x[:, : self.encoder_bands], x[:, self.encoder_bands :]


class PixelMLP(nn.Sequential):
    """``Linear -> LayerNorm -> GELU -> Linear`` over each pixel's channels of an image batch.

    (B, C, H, W) -> (B, C_out, H, W): 1x1 convolutions with a LayerNorm over each pixel's
    channels, computed on the channels-last view of the input. A channel slice of a
    channels-last batch (the appended spectra after the routed bands) is then read in place; a
    convolution would copy it first. Each pixel is normalised on its own: a batch of a few tiles
    holds a few fields, so a BatchNorm's batch statistics in training would not be its running
    ones at test, and the path would misclassify areas it has not seen (docs/segmentation.md).
    """

    def __init__(self, in_channels: int, hidden: int, out_channels: int) -> None:
        super().__init__(
            nn.Linear(in_channels, hidden),
            nn.LayerNorm(hidden),
            nn.GELU(),
            nn.Linear(hidden, out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        if f"{prefix}1.running_mean" in state_dict:
            raise ValueError(
                f"The checkpoint's spectral path ({prefix.rstrip('.')}) has a BatchNorm: it was "
                "trained by an earlier terratorch-hsi-peft, whose segmentation path used 1x1 "
                "convolutions with a BatchNorm. The path now normalises each pixel with a "
                "LayerNorm (docs/segmentation.md), so these weights do not fit it; train the "
                "model again with this version."
            )
        super()._load_from_state_dict(state_dict, prefix, *args)


class SpectralPathModel(_SpectralPath, PixelWiseModel):
    """TerraTorch's ``PixelWiseModel`` plus a per-pixel spectral path added before the head.

    ``head(upsample(decoder(neck(encoder(x)))) + path(x))`` where ``path`` is
    :class:`PixelMLP` ``(bands, channels, C)`` (per pixel: ``Linear -> LayerNorm -> GELU ->
    Linear``, as 1x1 convolutions would compute it) and ``C`` is the decoder's output
    channels; the decoder's output is resized (bilinear) to the input's
    size first when they differ. With ``window`` > 1 the path's output is averaged over each
    pixel's ``window x window`` neighbours (those inside the tile): a field's pixels share its
    class, a prior that holds in areas the model has not seen, unlike the layout of the
    training fields that the decoder can learn (docs/segmentation.md). With ``spectra`` the
    input holds ``in_channels`` routed bands and then ``spectra`` appended ones: the encoder
    reads the former, the path the latter. Encoder, neck, decoder and head are the stock
    model's, so adapters, freezing and checkpoints behave as for ``PixelWiseModel``.

    Args:
        model: the ``PixelWiseModel`` built by ``EncoderDecoderFactory`` (segmentation or
            regression; no auxiliary heads).
        in_channels: bands of the encoder's input.
        spec: the path's settings: ``width`` (``channels`` above), ``bands`` (``spectra``;
            None: the path reads the encoder's input), ``loss`` (also output the path's own
            logits in training, auxiliary head :data:`PATH_HEAD`) and ``window``. The window is
            checked against each tile size met (:func:`check_window`): ``2t - 1`` or more for a
            side of ``t`` pixels makes the path constant along it and is refused; wider than
            ``t`` is warned about.
    """

    def __init__(self, model: PixelWiseModel, in_channels: int, spec: SpectralPathSpec) -> None:
        width = self._adopt(model, PixelWiseModel, in_channels, spec)
        self.spectral_path = PixelMLP(spec.bands or in_channels, spec.width, width)
        self._checked_sizes: set[tuple[int, int]] = set()  # tile sizes check_window passed

    def forward(self, x: torch.Tensor, **kwargs: Any) -> ModelOutput:
        """``PixelWiseModel.forward`` with the spectral path added to the decoder's output."""
        image_size_out = self.image_size_out or kwargs.get("image_size") or tuple(x.shape[-2:])
        x, spectra = self.split_input(pad_stock_input(self, x))
        input_size = tuple(x.shape[-2:])
        features = self.neck(self.encoder(x, **kwargs), image_size=input_size)
        decoded = self.decoder([f.clone() for f in features])
        if tuple(decoded.shape[-2:]) != input_size:
            decoded = F.interpolate(decoded, size=input_size, mode="bilinear")
        path = self.spectral_path(spectra)
        window = self.spec.window
        if window > 1:
            size = (path.shape[-2], path.shape[-1])
            if size not in self._checked_sizes:  # once per tile size: Python ints, no sync
                check_window(window, size)
                self._checked_sizes.add(size)
            path = window_average(path, window)

        def mask(features: torch.Tensor) -> torch.Tensor:
            return crop_pixel_wise_output(self, self.head(features), image_size_out)

        return self._output(mask(decoded + path), lambda: mask(path))


class SpectralPathClassifier(_SpectralPath, ScalarOutputModel):
    """TerraTorch's ``ScalarOutputModel`` plus the centre pixel's spectrum added before the head.

    For patch classification (the label is the centre pixel's):
    ``head(decoder(neck(encoder(x))) + path(centre(x)))`` where ``centre`` is the spectrum at
    the patch's centre (the mean of the central 2x2 pixels when the side is even, as after
    resizing an odd window to an even ``img_size``) and ``path`` is
    ``Linear(bands, channels) -> BatchNorm -> GELU -> Linear(channels, D)``, ``D`` the decoder's
    output width. Inputs with appended spectra are split as in :class:`SpectralPathModel`.

    Args:
        model: the ``ScalarOutputModel`` built by ``EncoderDecoderFactory`` (classification or
            scalar regression; no auxiliary heads).
        in_channels, spec: as for :class:`SpectralPathModel`.

    Raises:
        ValueError: ``spec.window`` other than 1 (the path reads the patch's centre pixel; the
            patch is the neighbourhood).
    """

    def __init__(self, model: ScalarOutputModel, in_channels: int, spec: SpectralPathSpec) -> None:
        if spec.window != 1:
            raise ValueError(
                f"spectral_path.window={spec.window!r} averages a segmentation model's path "
                "over neighbouring pixels; a classification model's path reads the patch's "
                "centre pixel only. Remove window from model_args.spectral_path."
            )
        width = self._adopt(model, ScalarOutputModel, in_channels, spec)
        self.spectral_path = nn.Sequential(
            nn.Linear(spec.bands or in_channels, spec.width),
            nn.BatchNorm1d(spec.width),
            nn.GELU(),
            nn.Linear(spec.width, width),
        )

    def forward(self, x: torch.Tensor, **kwargs: Any) -> ModelOutput:
        """``ScalarOutputModel.forward`` with the centre pixel's path added before the head."""
        x, spectra = self.split_input(x)
        # The centre of the patch as given: TerraTorch's padding extends the bottom/right only.
        path = self.spectral_path(centre(spectra))
        x = pad_stock_input(self, x)
        features = self.neck(self.encoder(x, **kwargs), image_size=tuple(x.shape[-2:]))
        decoded = self.decoder([f.clone() for f in features])
        return self._output(self.head(decoded + path), lambda: self.head(path))


def window_average(x: torch.Tensor, window: int) -> torch.Tensor:
    """Mean of (B, C, H, W) ``x`` over each pixel's ``window x window`` neighbours inside the
    tile (odd ``window``; pixels near an edge average the neighbours they have)."""
    if window == 1:
        return x
    return F.avg_pool2d(x, window, stride=1, padding=window // 2, count_include_pad=False)


def check_window(window: int, size: tuple[int, int]) -> None:
    """Refuse a ``window`` under which :func:`window_average` is constant along a side of tiles
    of ``size`` (H, W); warn when it is wider than a side.

    Along a side of ``t`` pixels, pixel ``i`` averages pixels ``max(0, i - r)`` to
    ``min(t - 1, i + r)``, ``r = window // 2``. That span is the same for every ``i`` exactly
    when ``r >= t - 1``, i.e. ``window >= 2t - 1``: the output is then the tile's mean along that
    side whatever the input (one value per tile when both sides are that short). Below it, while
    ``window > t``, no pixel's window fits in the tile: each pixel averages more than half of the
    side, and the two edge pixels' spans share ``2 (window + 1 - t) / (window + 1)`` of their
    pixels, so the path varies little across the tile.

    Raises:
        ValueError: ``window >= 2t - 1`` for a side ``t``.

    Warns:
        UserWarning: ``t < window < 2t - 1`` for a side ``t``.
    """
    height, width = size
    short = min(height, width)
    side = "side" if height == width else ("height" if height < width else "width")
    if window >= 2 * short - 1:
        constant = (
            "one value per tile"
            if window >= 2 * max(height, width) - 1
            else f"the same all along the tile's {side}"
        )
        raise ValueError(
            f"spectral_path.window={window} on {height}x{width} tiles makes the spectral path "
            f"constant across them ({constant}): from every pixel, a window of {window} reaches "
            f"the whole {side} of {short} pixels ({2 * short - 1} or more does). Use a window "
            f"of at most {short} (e.g. 5), or tiles of at least {window} pixels a side "
            "(the datamodule's tile_size and backbone_img_size)."
        )
    if window > short:
        warnings.warn(
            f"spectral_path.window={window} is wider than the {height}x{width} tiles: every "
            f"pixel averages the path over more than half of the tile's {side}, so it varies "
            f"little across the tile. A window of at most {short} (e.g. 5) keeps it local.",
            UserWarning,
            stacklevel=3,
        )


def centre(x: torch.Tensor) -> torch.Tensor:
    """(B, C) spectrum at the centre of (B, C, H, W) patches (central 2x2 mean on even sides)."""
    height, width = x.shape[-2:]
    rows = slice((height - 1) // 2, height // 2 + 1)
    cols = slice((width - 1) // 2, width // 2 + 1)
    return x[..., rows, cols].mean(dim=(-2, -1))


def with_spectral_path(
    model: Model, in_channels: int, spec: SpectralPathSpec
) -> SpectralPathModel | SpectralPathClassifier:
    """The spectral-path wrapper of ``model``'s kind (pixel-wise or scalar output)."""
    if isinstance(model, ScalarOutputModel):
        return SpectralPathClassifier(model, in_channels, spec)
    return SpectralPathModel(model, in_channels, spec)
