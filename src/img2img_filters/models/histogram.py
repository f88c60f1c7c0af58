"""What a global operator reads from the whole photo: its histograms, as per-pixel inputs.

Auto-levels, normalisation, contrast stretches and histogram equalisation map
each pixel through a curve that the photo's own histogram decides: a pixel's
output depends on where its value ranks among all the photo's values, and on
the photo's dark and bright percentiles. No window of pixels holds that, however
wide. :func:`histogram_features` computes it for each pixel, from the
histograms of the photo's red, green, blue and gray (the mean of the channels):

* the pixel's rank in each: the share of the photo's values at or below its own
  (histogram equalisation is this rank, exactly);
* the photo's quantiles :data:`QUANTILES` of each, and its mean, the same at every
  pixel (a stretch maps the dark and bright percentiles to black and white).

The histograms have ``bins`` bins over [0, 1] (256: exact for 8-bit photos) and
are made with ``scatter_add`` and ``cumsum``, which export to ONNX. The features
take no gradient (they are counts); a network learns what to do with them.

A photo too large to filter at once is filtered in tiles: its
:func:`histogram_statistics` (counts and sums) are gathered strip by strip
first, and each tile's features are read from them, so the result is the same.
"""

from __future__ import annotations

import torch

__all__ = ["QUANTILES", "histogram_feature_count", "histogram_features", "histogram_statistics"]

#: The quantiles of each histogram given to every pixel.
QUANTILES = (0.01, 0.02, 0.05, 0.25, 0.5, 0.75, 0.95, 0.98, 0.99)


def histogram_feature_count(in_channels: int) -> int:
    """Features per pixel for ``in_channels`` channels (their gray is one more histogram)."""
    histograms = in_channels + 1
    return histograms * (2 + len(QUANTILES))


def _binned(x: torch.Tensor, bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The channels and their gray ``(B, K, H, W)`` float64, and each value's bin ``(B, K, N)``."""
    values = torch.cat([x, x.mean(dim=1, keepdim=True)], dim=1).double()
    index = (values.clamp(0.0, 1.0) * (bins - 1)).round().long().flatten(2)
    return values, index


def _statistics(values: torch.Tensor, index: torch.Tensor, bins: int) -> torch.Tensor:
    """:func:`histogram_statistics` from :func:`_binned`'s values and bins."""
    b, k = values.shape[:2]
    counts = torch.zeros(b, k, bins, dtype=values.dtype, device=values.device)
    counts = counts.scatter_add(2, index, torch.ones_like(values.flatten(2)))
    sums = values.sum(dim=(2, 3))
    # counted from the data, not the shape: an ONNX export keeps it for every size
    pixels = torch.ones_like(values[:, :1]).sum(dim=(2, 3))
    return torch.cat([counts.flatten(1), sums, pixels], dim=1)


def histogram_statistics(x: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """The photo's histograms as sums that add up over parts of it (tiles, strips).

    Args:
        x: Photos or parts of them ``(B, C, H, W)``, values in [0, 1] (others count in the
            end bins).
        bins: Bins of each histogram over [0, 1].

    Returns:
        ``(B, K * bins + K + 1)`` float64 with ``K = C + 1`` (the channels and their gray):
        the counts of each histogram, the sum of its values, and the number of pixels.
        The statistics of a whole photo are the sum of its parts'.
    """
    with torch.no_grad():
        return _statistics(*_binned(x, bins), bins)


def histogram_features(
    x: torch.Tensor, bins: int = 256, statistics: torch.Tensor | None = None
) -> torch.Tensor:
    """Each pixel's rank in the photo's histograms, and the photo's quantiles and means.

    Args:
        x: Photos ``(B, C, H, W)``, values in [0, 1] (others count in the end bins), or
            tiles of them when ``statistics`` are given.
        bins: Bins of each histogram over [0, 1].
        statistics: The whole photos' :func:`histogram_statistics` ``(B, K * bins + K + 1)``
            (gathered part by part); ``None``: those of ``x``.

    Returns:
        ``(B, H, W, (C + 1) * (2 + len(QUANTILES)))``, channels last: for each of the
        ``C`` channels and their gray, the pixel's rank (in [0, 1]), then for each the
        quantiles (values in [0, 1]) and the mean, repeated at every pixel.
    """
    b, c, h, w = x.shape
    k = c + 1
    with torch.no_grad():
        values, index = _binned(x, bins)
        if statistics is None:
            statistics = _statistics(values, index, bins)
        statistics = statistics.to(torch.float64)
        counts = statistics[:, : k * bins].view(b, k, bins)
        sums, pixels = statistics[:, k * bins : k * bins + k], statistics[:, -1:]
        cdf = counts.cumsum(dim=2) / pixels.unsqueeze(2)  # the share in each bin or below it
        rank = cdf.gather(2, index).view(b, k, h, w)
        levels = torch.tensor(QUANTILES, dtype=cdf.dtype, device=cdf.device)
        # the q-quantile: the first bin whose cumulative share reaches q
        below = (cdf.unsqueeze(2) < levels.view(1, 1, -1, 1)).sum(dim=3)  # (B, K, Q)
        quantiles = below.to(cdf.dtype) / (bins - 1)
        means = sums / pixels  # (B, K)
        per_photo = torch.cat([quantiles, means.unsqueeze(2)], dim=2).flatten(1)  # (B, K*(Q+1))
        per_pixel = rank.permute(0, 2, 3, 1)  # (B, H, W, K)
        shared = per_photo[:, None, None, :].expand(b, h, w, per_photo.shape[1])
        return torch.cat([per_pixel, shared], dim=3).to(x.dtype)
