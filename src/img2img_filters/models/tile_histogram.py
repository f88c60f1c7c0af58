"""Contrast-limited adaptive histogram equalisation (CLAHE) of a gray channel, in PyTorch.

Adaptive equalisation maps each pixel through the equalising curve of the tiles
around it: the photo is cut into a grid of tiles (``tiles`` per side, each
``size // tiles`` pixels), each tile's histogram is clipped at ``clip_limit``
times its pixel count and the clipped counts spread back over the bins, its
cumulative sum is the tile's curve, and a pixel's output is the bilinear
blend of the curves of the four tile centres around it. The photo is
stretched to its full range before and after.

:func:`equalise_tiles` follows the arithmetic of scikit-image's
``exposure.equalize_adapthist`` step by step (its 14-bit gray levels, its bins,
half-tile reflected margins, the order in which clipped counts are spread
back), so that with scikit-image's defaults it is that function; tests hold it
to it. Every step is an integer or a table look-up, with no gradient: a model
learns what it does *with* the equalised channel.

The functions are TorchScript, so a traced export of a model that calls them
equalises photos of every size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["GRAY_LEVELS", "clip_histograms", "equalise_tiles"]

#: Gray levels the channel is quantised to before it is binned.
GRAY_LEVELS = 2**14


@torch.jit.script
def clip_histograms(histograms: torch.Tensor, limit: int) -> torch.Tensor:
    """Clip each histogram at ``limit`` counts and spread what was cut back over its bins.

    The cut counts go to every bin evenly first (as far as whole counts go and no bin
    passes the limit), then one at a time to the bins still under the limit, at a
    stride of about (bins under the limit) / (counts left), from the first bin on.

    Args:
        histograms: ``(T, bins)`` integer counts (``int64``).
        limit: The most counts a bin keeps (``>= 1``).

    Returns:
        ``(T, bins)`` ``int64``: the clipped histograms, no bin above ``limit``, each with
        the total it came with (a few counts more where the last stride overshoots; every
        bin at ``limit`` where the total is more than the bins hold).
    """
    bins = histograms.shape[-1]
    excess = (histograms - limit).clamp_min(0).sum(-1)
    clipped = histograms.clamp_max(limit)
    increment = torch.div(excess, bins, rounding_mode="floor")
    upper = (limit - increment).unsqueeze(-1)
    low = clipped < upper
    excess = excess - low.sum(-1) * increment
    clipped = torch.where(low, clipped + increment.unsqueeze(-1), clipped)
    middle = (clipped >= upper) & (clipped < limit)
    excess = excess + (clipped * middle).sum(-1) - middle.sum(-1) * limit
    clipped = torch.where(middle, torch.full_like(clipped, limit), clipped)
    positions = torch.arange(bins, device=histograms.device)
    running = excess > 0
    while bool(running.any()):
        before = excess.clone()
        active = running.clone()
        for index in range(bins):
            under = clipped < limit
            step = torch.div(under.sum(-1), excess.clamp_min(1), rounding_mode="floor")
            step = step.clamp_min(1).unsqueeze(-1)
            picked = under & (positions >= index) & ((positions - index) % step == 0)
            picked = picked & active.unsqueeze(-1)
            clipped = clipped + picked.long()
            excess = excess - picked.sum(-1)
            active = active & (excess > 0)
            if not bool(active.any()):
                break
        running = running & (excess > 0) & (excess != before)
    return clipped


@torch.jit.script
def _stretch(values: torch.Tensor, top: float) -> torch.Tensor:
    """Each photo of ``values`` ``(N, H, W)`` stretched from its own minimum and maximum to [0, top].

    A constant photo is left as it is, clipped to [0, top].
    """
    low = values.amin(dim=(1, 2), keepdim=True)
    high = values.amax(dim=(1, 2), keepdim=True)
    span = high - low
    stretched = (values - low) / span.clamp_min(1e-300) * top
    return torch.where(span > 0, stretched, values.clamp(0.0, top))


@torch.jit.script
def _reflect(values: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """``(N, H, W)`` extended by mirroring without repeating the edge (a side of 1 is repeated)."""
    rows = "reflect" if values.shape[1] > 1 else "replicate"
    columns = "reflect" if values.shape[2] > 1 else "replicate"
    x = values.unsqueeze(1)
    x = F.pad(x, [0, 0, top, bottom], mode=rows)
    x = F.pad(x, [left, right, 0, 0], mode=columns)
    return x.squeeze(1)


@torch.jit.script
def equalise_tiles(
    gray: torch.Tensor,
    tiles: int = 8,
    clip_limit: float = 0.01,
    bins: int = 256,
    gray_levels: int = GRAY_LEVELS,
) -> torch.Tensor:
    """Contrast-limited adaptive histogram equalisation of each photo of ``gray``.

    Args:
        gray: ``(N, H, W)`` values in [0, 1] (clamped to it), ``H, W >= 1``.
        tiles: Tiles per side: a tile is ``H // tiles`` by ``W // tiles`` pixels (at least 1).
        clip_limit: A bin of a tile's histogram keeps at most this share of the tile's
            pixels (at least one); 0 does not clip (plain adaptive equalisation).
        bins: Histogram bins over the gray levels.
        gray_levels: Levels the channel is quantised to before it is binned (scikit-image's
            14 bits: :data:`GRAY_LEVELS`).

    Returns:
        ``(N, H, W)`` float64 in [0, 1]: the equalised photos, each stretched to the full range.
    """
    n, height, width = gray.shape[0], gray.shape[1], gray.shape[2]
    top_level = float(gray_levels - 1)
    tile_h = max(height // tiles, 1)
    tile_w = max(width // tiles, 1)
    levels = torch.round(gray.double().clamp(0.0, 1.0) * 65535.0)
    levels = torch.round(_stretch(levels, top_level))
    binned = torch.div(levels, 1 + gray_levels // bins, rounding_mode="floor")
    top, left = tile_h // 2, tile_w // 2
    bottom = (tile_h - height % tile_h) % tile_h + math.ceil(tile_h / 2.0)
    right = (tile_w - width % tile_w) % tile_w + math.ceil(tile_w / 2.0)
    padded = _reflect(binned, top, bottom, left, right).long()
    rows_in, columns_in = padded.shape[1] // tile_h - 1, padded.shape[2] // tile_w - 1
    region = padded[:, top : top + rows_in * tile_h, left : left + columns_in * tile_w]
    region = region.reshape(n, rows_in, tile_h, columns_in, tile_w).permute(0, 1, 3, 2, 4)
    region = region.reshape(n * rows_in * columns_in, tile_h * tile_w)
    histograms = torch.zeros(region.shape[0], bins, dtype=torch.long, device=gray.device)
    histograms = histograms.scatter_add_(1, region, torch.ones_like(region))
    pixels = tile_h * tile_w
    limit = max(int(clip_limit * pixels), 1) if clip_limit > 0 else pixels
    histograms = clip_histograms(histograms, limit)
    curves = histograms.cumsum(-1).double() * (top_level / pixels)
    curves = curves.clamp_max(top_level).floor()
    curves = curves.reshape(n, rows_in, columns_in, bins).permute(0, 3, 1, 2)
    curves = F.pad(curves, [1, 1, 1, 1], mode="replicate").permute(0, 2, 3, 1)
    rows = torch.arange(padded.shape[1], device=gray.device)
    columns = torch.arange(padded.shape[2], device=gray.device)
    down = (rows % tile_h).double() / tile_h
    across = (columns % tile_w).double() / tile_w
    row_tile = torch.div(rows, tile_h, rounding_mode="floor")
    column_tile = torch.div(columns, tile_w, rounding_mode="floor")
    photo = torch.arange(n, device=gray.device).view(n, 1, 1)
    equalised = torch.zeros(padded.shape, dtype=torch.float32, device=gray.device)
    for below in range(2):
        row_weight = down if below == 1 else 1.0 - down
        for beyond in range(2):
            column_weight = across if beyond == 1 else 1.0 - across
            curve = curves[
                photo,
                (row_tile + below).view(1, -1, 1),
                (column_tile + beyond).view(1, 1, -1),
                padded,
            ]
            weight = row_weight.view(1, -1, 1) * column_weight.view(1, 1, -1)
            equalised = equalised + (curve * weight).float()
    equalised = equalised.floor().double()[:, top : top + height, left : left + width]
    return _stretch(equalised, 1.0)
