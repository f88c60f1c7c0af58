"""The probe's measurements on an operator that can be called.

Every error is a root-mean-square difference divided by the span of the
operator's outputs on the probe photos (``max - min``, 1 when constant), so
figures compare across operators whatever their output range. All inputs are
``(H, W, 3)`` uint8; the operator is an :class:`~img2img_filters.probe.inputs.OperatorRunner`.
"""

from __future__ import annotations

import numpy as np

from img2img_filters.probe.inputs import OperatorRunner

__all__ = [
    "IMPULSE_SIDE",
    "channel_map",
    "far_change",
    "impulse_radius",
    "permutation_error",
    "shift_error",
    "superposition_error",
]

#: Side of the backgrounds that impulse responses are measured on.
IMPULSE_SIDE = 64
#: The shift (rows, columns) of the shift-invariance test.
SHIFT = (3, 5)


def _rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(values))))


def permutation_error(
    run: OperatorRunner, photos: list[np.ndarray], rng: np.random.Generator
) -> float:
    """Pointwise test: shuffle the pixels of two photos into one image, filter, un-shuffle, compare.

    A pointwise operator (each output pixel a function of that pixel's colour
    alone) gives a pixel the same value wherever it lands and whatever photo
    surrounds it; one whose lookup depends on the whole image (histogram
    equalisation) does not, since the mixed image has other statistics.

    Returns:
        The largest RMS difference over consecutive pairs of photos (in output units).
    """
    worst = 0.0
    for first, second in zip(photos, photos[1:] + photos[:1], strict=True):
        height, width, _ = first.shape
        count = height * width
        pixels = np.concatenate([first.reshape(-1, 3), second.reshape(-1, 3)])
        outputs = np.concatenate([run(first).reshape(count, -1), run(second).reshape(count, -1)])
        picks = rng.permutation(2 * count)[:count]
        mixed = run(pixels[picks].reshape(height, width, 3)).reshape(count, -1)
        worst = max(worst, _rms(mixed - outputs[picks]))
    return worst


def superposition_error(run: OperatorRunner, images: list[np.ndarray]) -> float:
    """Linearity test: ``f((x + y) / 2)`` against ``(f(x) + f(y)) / 2`` on consecutive pairs.

    Inputs are made even (lowest bit cleared) so that ``(x + y) / 2`` is exact in
    uint8 and stays in [0, 255]. An affine operator passes too.

    Returns:
        The largest RMS difference over the pairs (in output units).
    """
    worst = 0.0
    evens = [image & np.uint8(0xFE) for image in images]
    for first, second in zip(evens, evens[1:] + evens[:1], strict=True):
        height = min(first.shape[0], second.shape[0])
        width = min(first.shape[1], second.shape[1])
        x, y = first[:height, :width], second[:height, :width]
        mean = ((x.astype(np.uint16) + y) // 2).astype(np.uint8)
        worst = max(worst, _rms(run(mean) - (run(x) + run(y)) / 2))
    return worst


def shift_error(run: OperatorRunner, photos: list[np.ndarray], margin: int) -> float:
    """Shift-invariance test: ``f(shift(x))`` against ``shift(f(x))`` away from the borders.

    Two crops of each photo offset by :data:`SHIFT` are filtered; their outputs
    are compared where both crops overlap, ``margin`` pixels inside each crop.

    Returns:
        The largest RMS difference over the photos (in output units).
    """
    dy, dx = SHIFT
    worst = 0.0
    for photo in photos:
        height, width, _ = photo.shape
        m = max(0, min(margin, (height - 2 * dy) // 2 - 4, (width - 2 * dx) // 2 - 4))
        first = run(photo[: height - dy, : width - dx])
        second = run(photo[dy:, dx:])
        a = first[dy + m : height - dy - m, dx + m : width - dx - m]
        b = second[m : height - 2 * dy - m, m : width - 2 * dx - m]
        worst = max(worst, _rms(a - b))
    return worst


def channel_map(
    run: OperatorRunner, photos: list[np.ndarray], rng: np.random.Generator, threshold: float
) -> np.ndarray:
    """Which output channel depends on which input channel.

    Each input channel in turn is replaced by noise; an output channel depends on
    it when any of its values moves by more than ``threshold``.

    Returns:
        bool ``(C_out, 3)``.
    """
    depends = None
    for photo in photos[:2]:
        out = run(photo)
        if depends is None:
            depends = np.zeros((out.shape[2], 3), dtype=bool)
        for channel in range(3):
            changed = photo.copy()
            changed[..., channel] = rng.integers(0, 256, photo.shape[:2], dtype=np.uint8)
            moved = np.abs(run(changed) - out).max(axis=(0, 1))
            depends[:, channel] |= moved > threshold
    return depends


def impulse_radius(
    run: OperatorRunner, backgrounds: list[np.ndarray], threshold: float
) -> tuple[int, int]:
    """Support radius from impulse responses: the farthest output a one-pixel change moves.

    On each background (flat, photo crops, noise) the pixels near the centre are
    set in turn to 0 and to 255; the output changes by more than ``threshold`` at
    Chebyshev distance ``r`` from the pixel give the radius. Setting both extremes
    makes the pixel cross every order statistic of its neighbourhood, so rank
    filters (median, dilation) respond as far as they reach.

    Returns:
        ``(radius, limit)``: the largest distance found and the largest that could be
        seen (the distance from the perturbed pixels to the border).
    """
    radius, limit = 0, IMPULSE_SIDE
    for background in backgrounds:
        side = background.shape[0]
        centre = side // 2
        spots = [(centre, centre), (centre - 3, centre + 4), (centre + 4, centre - 5)]
        limit = min(limit, centre - 5)
        base = run(background)
        for y, x in spots:
            for value in (0, 255):
                changed = background.copy()
                changed[y, x] = value
                if np.array_equal(changed, background):
                    continue
                rows, cols = np.nonzero(np.abs(run(changed) - base).max(axis=2) > threshold)
                if len(rows):
                    reach = max(np.abs(rows - y).max(), np.abs(cols - x).max())
                    radius = max(radius, int(reach))
    return radius, limit


def far_change(run: OperatorRunner, photos: list[np.ndarray], guard: int) -> float:
    """Global test: how much the left half's output moves when only the right half changes.

    The left half is a photo (also with its range compressed to [64, 191], so that
    range-dependent operators such as auto-levels see room to stretch); the right
    half is black, white or another photo. Outputs are compared in the left half,
    ``guard`` pixels away from the changed half, where no local operator reaches.

    Returns:
        The largest RMS change (in output units).
    """
    worst = 0.0
    for index, photo in enumerate(photos[:2]):
        half = photo.shape[1] // 2
        keep = max(4, half - guard)
        other = photos[(index + 1) % len(photos)]
        for left in (photo, (64 + photo // 2).astype(np.uint8)):
            outputs = []
            for right in (np.zeros_like(photo), np.full_like(photo, 255), other):
                image = left.copy()
                image[:, half:] = right[:, half:]
                outputs.append(run(image)[:, :keep])
            for out in outputs[1:]:
                worst = max(worst, _rms(out - outputs[0]))
    return worst
