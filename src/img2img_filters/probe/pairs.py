"""The probe's measurements when only example pairs exist.

Without the operator nothing can be perturbed, so the figures come from fits:

- *pointwise*: pixels of the same exact input colour should have the same target;
  the spread of targets within colours (pooled over all photos) is the error.
  The same spread within each photo alone tells an image-dependent lookup
  (histogram equalisation, auto-levels) from a shared one.
- *linear* and *radius*: least-squares linear kernels (with a bias) of growing
  size, fitted on the same sampled pixels; the residual of the best fit says
  whether a linear filter explains the pairs, and the size where it stops
  improving gives the radius.
- *shift-invariance* cannot be measured from pairs: a fit assumes it.

Errors are RMS residuals divided by the span of the targets.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["KERNEL_SIZES", "MIN_REPEATS", "colour_spread", "kernel_residuals"]

#: The kernel sizes fitted, smallest first.
KERNEL_SIZES = (1, 3, 5, 7, 9, 11)
#: Pixels sharing a colour needed before the lookup spread is trusted.
MIN_REPEATS = 1000
#: Pixels of each photo the colour spread looks at (a random sample of larger photos).
SPREAD_PIXELS = 1 << 18
#: Pixels sampled for the kernel fits, in all.
FIT_SAMPLES = 6_000


def _spread(keys: np.ndarray, targets: np.ndarray) -> tuple[float, int]:
    """Sum of squared deviations from each key's mean target, and the pixels counted.

    Only keys seen at least twice count.
    """
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    total, pixels = 0.0, 0
    for channel in range(targets.shape[1]):
        values = targets[:, channel]
        sums = np.bincount(inverse, weights=values)
        squares = np.bincount(inverse, weights=values * values)
        repeated = counts > 1
        deviation = squares[repeated] - sums[repeated] ** 2 / counts[repeated]
        total += float(np.clip(deviation, 0.0, None).sum())
    pixels = int(counts[counts > 1].sum())
    return total, pixels * targets.shape[1]


def colour_spread(
    pairs: list[tuple[np.ndarray, np.ndarray]], rng: np.random.Generator
) -> tuple[float | None, float | None]:
    """RMS spread of the targets among pixels of one exact input colour.

    Returns:
        ``(pooled, per_image)``: the spread with colours shared across all photos
        (one lookup table) and within each photo (one table per photo); ``None``
        where fewer than :data:`MIN_REPEATS` pixels share a colour. Photos larger
        than :data:`SPREAD_PIXELS` pixels count a random sample of that many.
    """
    pooled_keys, pooled_targets = [], []
    total, count = 0.0, 0
    for image, target in pairs:
        keys = image.reshape(-1, 3).astype(np.int64) @ np.array([65536, 256, 1])
        values = target.reshape(len(keys), -1)
        if len(keys) > SPREAD_PIXELS:
            picks = rng.choice(len(keys), SPREAD_PIXELS, replace=False)
            keys, values = keys[picks], values[picks]
        spread, pixels = _spread(keys, values)
        total, count = total + spread, count + pixels
        pooled_keys.append(keys)
        pooled_targets.append(values)
    spread, pixels = _spread(np.concatenate(pooled_keys), np.concatenate(pooled_targets))
    pooled = float(np.sqrt(spread / pixels)) if pixels >= MIN_REPEATS else None
    per_image = float(np.sqrt(total / count)) if count >= MIN_REPEATS else None
    return pooled, per_image


def kernel_residuals(
    pairs: list[tuple[np.ndarray, np.ndarray]], rng: np.random.Generator
) -> dict[int, float]:
    """Held-out RMS residual of the least-squares linear kernel (plus bias) of each size.

    The same pixels, at least ``max(KERNEL_SIZES) // 2`` from every border, are
    sampled for every size, so the residuals compare; the kernels are solved on
    half of them (normal equations) and measured on the other half. Inputs are
    scaled to [0, 1].

    Returns:
        ``{kernel size: RMS residual in target units}``.

    Raises:
        ValueError: If no photo is larger than the largest kernel.
    """
    reach = max(KERNEL_SIZES) // 2
    usable = [p for p in pairs if min(p[0].shape[:2]) > 2 * reach]
    if not usable:
        raise ValueError(
            f"pairs: every input is smaller than {2 * reach + 1} pixels on a side; "
            "the kernel fits need larger photos"
        )
    per_pair = max(1, FIT_SAMPLES // len(usable))
    patches, targets = [], []
    for image, target in usable:
        windows = sliding_window_view(image, (2 * reach + 1, 2 * reach + 1), axis=(0, 1))
        rows, cols = windows.shape[:2]
        picks = rng.choice(rows * cols, size=min(per_pair, rows * cols), replace=False)
        ys, xs = np.divmod(picks, cols)
        patches.append(windows[ys, xs].astype(np.float64) / 255.0)  # (n, 3, k, k)
        targets.append(target[ys + reach, xs + reach])
    patch = np.concatenate(patches)
    patch = np.concatenate([patch.reshape(len(patch), -1), np.ones((len(patch), 1))], axis=1)
    wanted = np.concatenate(targets)
    # Fit on one half of the samples, measure on the other: more weights cannot
    # lower the held-out residual by memorising the samples.
    order = rng.permutation(len(patch))
    fit, held = order[: len(order) // 2], order[len(order) // 2 :]
    gram = patch[fit].T @ patch[fit]
    moment = patch[fit].T @ wanted[fit]
    side = 2 * reach + 1
    residuals = {}
    for size in KERNEL_SIZES:
        grid = np.zeros((3, side, side), dtype=bool)
        lo = reach - size // 2
        grid[:, lo : lo + size, lo : lo + size] = True
        columns = np.append(np.flatnonzero(grid), side * side * 3)  # the window and the bias
        solution, *_ = np.linalg.lstsq(gram[np.ix_(columns, columns)], moment[columns], rcond=1e-12)
        error = patch[np.ix_(held, columns)] @ solution - wanted[held]
        residuals[size] = float(np.sqrt(np.mean(error**2)))
    return residuals
