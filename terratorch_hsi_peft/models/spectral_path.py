"""A full-resolution spectral path for segmentation models: each pixel's own spectrum, 1x1 convs.

A ViT encoder sees a pixel only through its token (e.g. 8x8 pixels x 3 bands), and the decoder
upsamples token features: every pixel of a token gets a blend of the token's spectra and its
context. On sparse hyperspectral labels that lets the model learn the training fields' layout
rather than their spectra (see docs/segmentation.md). :class:`SpectralPathModel` adds, at the
input's resolution, a per-pixel embedding of the input spectrum (1x1 conv, BatchNorm, GELU, 1x1
conv) to the decoder's output before the head, so the head always sees the pixel's own spectrum.

Selected in YAML with ``model_args.spectral_path: <hidden channels>`` under
``model_factory: PEFTEncoderDecoderFactory`` (any method, or none for full fine-tuning). The
path reads the encoder's (band-routed) input, or, with ``model_args.spectral_path_bands: <C>``
and the datamodule's ``append_spectra: true``, each pixel's whole z-scored spectrum appended
after the routed bands: a 12-component PCA keeps too little of a 200-band spectrum to separate
the classes (docs/segmentation.md).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from terratorch.models.model import ModelOutput
from terratorch.models.pixel_wise_model import PixelWiseModel
from terratorch.models.utils import center_crop, pad_images
from torch import nn

__all__ = ["SpectralPathModel"]


class SpectralPathModel(PixelWiseModel):
    """TerraTorch's ``PixelWiseModel`` plus a per-pixel spectral path added before the head.

    ``head(upsample(decoder(neck(encoder(x)))) + path(x))`` where ``path`` is
    ``Conv1x1(bands, channels) -> BatchNorm -> GELU -> Conv1x1(channels, C)`` and ``C`` is
    the decoder's output channels; the decoder's output is resized (bilinear) to the input's
    size first when they differ. With ``spectra`` the input holds ``in_channels`` routed bands
    and then ``spectra`` appended ones: the encoder reads the former, the path the latter.
    Encoder, neck, decoder and head are the stock model's, so adapters, freezing and checkpoints
    behave as for ``PixelWiseModel``.

    Args:
        model: the ``PixelWiseModel`` built by ``EncoderDecoderFactory`` (segmentation or
            regression; no auxiliary heads).
        in_channels: bands of the input image.
        channels: hidden width of the path (>= 1).
        spectra: bands appended after the encoder's for the path alone (the datamodule's
            ``append_spectra``); None: the path reads the encoder's input.
    """

    def __init__(
        self,
        model: PixelWiseModel,
        in_channels: int,
        channels: int,
        spectra: int | None = None,
    ) -> None:
        checked = [("in_channels", in_channels), ("spectral_path", channels)]
        if spectra is not None:
            checked.append(("spectral_path_bands", spectra))
        for name, value in checked:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(
                    f"{name}={value!r} must be a positive integer (spectral_path: the hidden "
                    "width of the per-pixel path, e.g. 32; spectral_path_bands: the bands the "
                    "datamodule appends with append_spectra; null for none)."
                )
        if not isinstance(model, PixelWiseModel):
            raise ValueError(
                f"spectral_path needs a pixel-wise task (segmentation or regression), but the "
                f"factory built a {type(model).__name__}; remove spectral_path from model_args."
            )
        if len(model.aux_heads):
            raise ValueError(
                "spectral_path does not support auxiliary heads (aux_decoders); remove one of them."
            )
        decoder_channels = model.decoder.out_channels
        if not isinstance(decoder_channels, int):
            raise ValueError(
                f"spectral_path needs a decoder with one output (out_channels an int), but "
                f"{type(model.decoder).__name__} has out_channels={decoder_channels!r}."
            )
        nn.Module.__init__(self)
        # The stock model's parts and settings (public and private), unchanged.
        bookkeeping = set(vars(nn.Module()))
        for name, value in vars(model).items():
            if name not in bookkeeping:
                object.__setattr__(self, name, value)
        for name, module in model.named_children():
            setattr(self, name, module)
        self.encoder_bands = in_channels
        self.spectra = spectra
        self.spectral_path = nn.Sequential(
            nn.Conv2d(spectra or in_channels, channels, kernel_size=1),
            nn.BatchNorm2d(channels),
            nn.GELU(),
            nn.Conv2d(channels, decoder_channels, kernel_size=1),
        )

    def forward(self, x: torch.Tensor, **kwargs: Any) -> ModelOutput:
        """``PixelWiseModel.forward`` with the spectral path added to the decoder's output."""
        image_size_out = self.image_size_out or kwargs.get("image_size") or tuple(x.shape[-2:])
        if self.patch_size and self.padding is not None:
            x = pad_images(x, self.patch_size, self.padding)
        x, spectra = self.split_input(x)
        input_size = tuple(x.shape[-2:])
        features = self.neck(self.encoder(x, **kwargs), image_size=input_size)
        decoded = self.decoder([f.clone() for f in features])
        if tuple(decoded.shape[-2:]) != input_size:
            decoded = F.interpolate(decoded, size=input_size, mode="bilinear")
        mask = self.head(decoded + self.spectral_path(spectra))
        mask = self._check_for_single_channel_and_squeeze(mask)
        return ModelOutput(output=center_crop(mask, image_size_out))

    def split_input(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(encoder input, path input) of a batch: its routed and appended bands, or x twice.

        Raises:
            ValueError: a batch whose channel count is not the routed plus appended bands.
        """
        if self.spectra is None:
            return x, x
        expected = self.encoder_bands + self.spectra
        if x.shape[1] != expected:
            raise ValueError(
                f"The model expects {self.encoder_bands} routed bands followed by "
                f"{self.spectra} appended spectral bands ({expected} channels), but the batch "
                f"has {x.shape[1]}. Set the datamodule's append_spectra: true (and "
                "spectral_path_bands to the scene's band count), or remove spectral_path_bands."
            )
        return x[:, : self.encoder_bands], x[:, self.encoder_bands :]
