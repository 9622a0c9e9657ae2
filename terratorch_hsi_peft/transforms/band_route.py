"""Band routes: how a sensor's C channels become the k bands the backbone is built for.

Every route is fitted on training pixels only and ends up as one linear map
``out = matrix @ (x - mean)`` with ``mean`` the (C,) training mean and ``matrix`` (k, C), so a
fitted route is two tensors that travel in a checkpoint and apply to a whole cube at once.

Routes:
    ``"none"``: the raw values, unchanged (k = C).
    ``"standardize"``: per-band z-score with the training mean and standard deviation (k = C).
    ``"pca"``: per-band z-score, then the first ``num_components`` principal components of the
    standardised training pixels (eigenvectors of their covariance, largest variance first, sign
    fixed so the largest loading is positive), each scaled to unit training variance when
    ``whiten`` (the default; otherwise the first component dominates the input scale).
    ``"sentinel2"``: SpectralGPT's 12 Sentinel-2 bands simulated from the sensor's wavelengths
    (see :mod:`terratorch_hsi_peft.transforms.sentinel2`), then z-scored per band with training
    statistics; bands the sensor does not cover follow ``missing_bands``.

Any route can also append every input channel, z-scored (``append_spectra``): the model's
encoder reads the routed bands and a per-pixel spectral path reads the whole spectrum
(``model_args.spectral_path.bands``, docs/segmentation.md). The appended rows are the
``"standardize"`` route's, so the result is still one linear map.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from terratorch_hsi_peft.transforms.sentinel2 import (
    SENTINEL2_BANDS,
    MissingBandPolicy,
    sentinel2_weights,
)

__all__ = ["BAND_ROUTES", "BandRoute", "BandRouteName"]

BandRouteName = Literal["none", "standardize", "pca", "sentinel2"]
BAND_ROUTES: tuple[str, ...] = ("none", "standardize", "pca", "sentinel2")


def _safe_std(values: np.ndarray) -> np.ndarray:
    # A band constant over the training pixels carries no information: map it to zero, not inf.
    std = values.std(axis=0)
    return np.where(std > 0, std, 1.0)


class BandRoute:
    """A fitted band route: ``out = matrix @ (x - mean)`` over the channel axis.

    Args:
        route: the route's name (one of :data:`BAND_ROUTES`).
        mean: (C,) value subtracted from every input channel.
        matrix: (k, C) map from centred input channels to output bands.
        band_names: k names of the output bands (``PC1``..., ``B1``..., ``band_1``...).
        spectra: how many of the last output bands are the appended z-scored input channels
            (0, or C with ``append_spectra``); the others are the route's own.
    """

    def __init__(
        self,
        route: str,
        mean: np.ndarray | torch.Tensor,
        matrix: np.ndarray | torch.Tensor,
        band_names: Sequence[str],
        spectra: int = 0,
    ) -> None:
        self.route = route
        self.mean = torch.as_tensor(np.asarray(mean, dtype=np.float64))
        self.matrix = torch.as_tensor(np.asarray(matrix, dtype=np.float64))
        self.band_names = list(band_names)
        if self.matrix.ndim != 2 or self.mean.shape != (self.matrix.shape[1],):
            raise ValueError(
                f"A band route needs mean (C,) and matrix (k, C); got {tuple(self.mean.shape)} "
                f"and {tuple(self.matrix.shape)}."
            )
        if len(self.band_names) != self.matrix.shape[0]:
            raise ValueError(
                f"{len(self.band_names)} band names for {self.matrix.shape[0]} output bands."
            )
        if spectra not in (0, self.matrix.shape[1]) or spectra >= self.matrix.shape[0]:
            raise ValueError(
                f"spectra={spectra} must be 0 or the {self.matrix.shape[1]} input channels, "
                f"below the {self.matrix.shape[0]} output bands."
            )
        self.spectra = int(spectra)

    @property
    def num_bands_in(self) -> int:
        """C, the number of sensor channels the route expects."""
        return int(self.matrix.shape[1])

    @property
    def num_bands_out(self) -> int:
        """All output bands: the routed ones, then the appended spectra (if any)."""
        return int(self.matrix.shape[0])

    @property
    def num_routed(self) -> int:
        """k, the route's own output bands: the encoder's (set ``backbone_num_bands`` to it)."""
        return self.num_bands_out - self.spectra

    @classmethod
    def fit(
        cls,
        route: BandRouteName,
        pixels: np.ndarray,
        *,
        num_components: int = 12,
        whiten: bool = True,
        wavelengths: Sequence[float] | np.ndarray | None = None,
        missing_bands: MissingBandPolicy = "zero",
        min_coverage: float = 0.25,
        append_spectra: bool = False,
    ) -> BandRoute:
        """Fit a route on training pixels.

        Args:
            route: ``"none"``, ``"standardize"``, ``"pca"`` or ``"sentinel2"``.
            pixels: (N, C) spectra of the training pixels (never validation or test pixels).
            num_components: k for ``"pca"``.
            whiten: scale every principal component to unit training variance (``"pca"``).
            wavelengths: (C,) channel centres in nm (``"sentinel2"``).
            missing_bands: policy for Sentinel-2 bands the sensor does not cover.
            min_coverage: response fraction below which a Sentinel-2 band counts as missing.
            append_spectra: append every input channel, z-scored with the training statistics,
                after the route's bands (for a per-pixel spectral path).

        Raises:
            ValueError: an unknown route, pixels that are not a finite (N, C) array, too few
                pixels or channels for ``num_components``, or ``"sentinel2"`` without wavelengths.
        """
        if route not in BAND_ROUTES:
            raise ValueError(f"band_route={route!r} is unknown; choose one of {list(BAND_ROUTES)}.")
        x = np.asarray(pixels, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(
                f"Band routes are fitted on an (N pixels, C bands) array with N > 0; got shape "
                f"{x.shape}. Check that the split has training pixels."
            )
        if not np.isfinite(x).all():
            raise ValueError("Training pixels hold NaN or inf; clean the cube before fitting.")
        channels = x.shape[1]
        mean = x.mean(axis=0)
        if append_spectra and route in ("none", "standardize"):
            raise ValueError(
                f"band_route {route!r} already gives every band, so append_spectra would only "
                "repeat them: set append_spectra to false (a spectral path then reads the routed "
                "bands; leave model_args.spectral_path.bands unset)."
            )
        if route == "none":
            fitted = cls(route, np.zeros(channels), np.eye(channels), _numbered("band", channels))
        elif route == "standardize":
            fitted = cls(route, mean, np.diag(1.0 / _safe_std(x)), _numbered("band", channels))
        elif route == "pca":
            fitted = cls._fit_pca(x, mean, num_components, whiten)
        else:
            fitted = cls._fit_sentinel2(x, mean, wavelengths, missing_bands, min_coverage)
        return fitted._with_spectra(x) if append_spectra else fitted

    def _with_spectra(self, x: np.ndarray) -> BandRoute:
        """This route with every channel of ``x``, z-scored, appended as output bands.

        The "pca" and "sentinel2" routes are centred on the training mean, as the z-score is, so
        the appended rows share their ``mean``.
        """
        matrix = np.concatenate([self.matrix.numpy(), np.diag(1.0 / _safe_std(x))])
        names = [*self.band_names, *_numbered("spectrum", x.shape[1])]
        return type(self)(self.route, self.mean, matrix, names, spectra=x.shape[1])

    @classmethod
    def _fit_pca(cls, x: np.ndarray, mean: np.ndarray, k: int, whiten: bool) -> BandRoute:
        n, channels = x.shape
        if not 1 <= k <= min(channels, n - 1):
            raise ValueError(
                f"num_components={k} must lie in 1..{min(channels, n - 1)} for {n} training "
                f"pixels of {channels} bands; lower num_components or use more training pixels."
            )
        scale = 1.0 / _safe_std(x)
        z = (x - mean) * scale
        variances, vectors = np.linalg.eigh(z.T @ z / n)
        order = np.argsort(variances)[::-1][:k]
        variances, vectors = variances[order], vectors[:, order]
        signs = np.sign(vectors[np.argmax(np.abs(vectors), axis=0), np.arange(k)])
        vectors = vectors * signs
        matrix = vectors.T * scale
        if whiten:
            if variances[-1] <= 1e-12 * variances[0]:
                raise ValueError(
                    f"Principal component {k} has (almost) no variance on the training pixels; "
                    "lower num_components or set pca_whiten to false."
                )
            matrix = matrix / np.sqrt(variances)[:, None]
        return cls("pca", mean, matrix, _numbered("PC", k))

    @classmethod
    def _fit_sentinel2(
        cls,
        x: np.ndarray,
        mean: np.ndarray,
        wavelengths: Sequence[float] | np.ndarray | None,
        missing_bands: MissingBandPolicy,
        min_coverage: float,
    ) -> BandRoute:
        if wavelengths is None:
            raise ValueError(
                "band_route 'sentinel2' needs the sensor's band wavelengths, and this scene has "
                "none. Pass `wavelengths` (one centre in nm per band) or use band_route 'pca'."
            )
        if len(wavelengths) != x.shape[1]:
            raise ValueError(
                f"{len(wavelengths)} wavelengths for a cube of {x.shape[1]} bands; pass one "
                "centre (nm) per band."
            )
        # Missing bands under "zero" have all-zero response rows, so they stay zero here.
        response, _ = sentinel2_weights(wavelengths, missing_bands, min_coverage)
        std = _safe_std((x - mean) @ response.T)
        return cls("sentinel2", mean, response / std[:, None], [b.name for b in SENTINEL2_BANDS])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(..., C, H, W)`` to ``(..., k, H, W)`` on ``x``'s device.

        The map runs in at least float32 (raw sensor counts do not survive bfloat16 centring) and
        the result comes back in ``x``'s dtype when that is a float type, else float32.
        """
        if x.shape[-3] != self.num_bands_in:
            raise ValueError(
                f"The {self.route!r} band route was fitted on {self.num_bands_in} bands but the "
                f"input has {x.shape[-3]}; predict on a scene from the same sensor."
            )
        out_dtype = x.dtype if x.is_floating_point() else torch.float32
        dtype = torch.promote_types(out_dtype, torch.float32)
        mean = self.mean.to(device=x.device, dtype=dtype)
        matrix = self.matrix.to(device=x.device, dtype=dtype)
        centred = x.to(dtype) - mean[:, None, None]
        return torch.einsum("kc,...chw->...khw", matrix, centred).to(out_dtype)

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors, strings and lists: safe for ``torch.load(weights_only=True)``."""
        return {
            "route": self.route,
            "mean": self.mean.clone(),
            "matrix": self.matrix.clone(),
            "band_names": list(self.band_names),
            "spectra": self.spectra,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> BandRoute:
        """Rebuild a fitted route from :meth:`state_dict`."""
        return cls(
            state["route"],
            state["mean"],
            state["matrix"],
            state["band_names"],
            int(state.get("spectra", 0)),  # absent from checkpoints of earlier versions
        )

    def __repr__(self) -> str:
        bands = f"{self.num_routed} bands" + (f" + {self.spectra} spectra" if self.spectra else "")
        return f"BandRoute({self.route!r}, {self.num_bands_in} -> {bands})"


def _numbered(prefix: str, count: int) -> list[str]:
    separator = "" if prefix == "PC" else "_"
    return [f"{prefix}{separator}{i}" for i in range(1, count + 1)]
