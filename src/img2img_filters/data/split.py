"""Train/validation splits that keep every photo on one side, and seeded subsets."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["choose_indices", "split_by_group"]


def check_fraction(val_fraction: float) -> float:
    """``val_fraction`` as a float, checked to lie in [0, 1)."""
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float, np.floating)):
        raise TypeError(f"val_fraction must be a float; got {type(val_fraction).__name__}")
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1); got {val_fraction}")
    return float(val_fraction)


def split_by_group(
    groups: np.ndarray, val_fraction: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split rows into train and validation so that no group (photo) is on both sides.

    ``round(val_fraction * n_groups)`` groups, drawn with ``seed``, go to
    validation; at least one when ``val_fraction > 0`` and there are two groups
    or more, and never all of them.

    Args:
        groups: ``(N,)`` the group of each row.
        val_fraction: The share of groups for validation, in [0, 1).
        seed: Seed of the draw.

    Returns:
        ``(train_rows, val_rows)``, int64, sorted.

    Raises:
        TypeError: If ``val_fraction`` is not a number.
        ValueError: If ``val_fraction`` is outside [0, 1) or ``groups`` is not 1-D.
    """
    val_fraction = check_fraction(val_fraction)
    groups = np.asarray(groups)
    if groups.ndim != 1:
        raise ValueError(f"groups must be 1-D (N,); got shape {groups.shape}")
    unique = np.unique(groups)
    count = len(unique)
    n_val = math.floor(count * val_fraction + 0.5)
    if val_fraction > 0 and count >= 2:
        n_val = min(max(n_val, 1), count - 1)
    elif count < 2:
        n_val = 0
    order = np.random.default_rng(seed).permutation(count)
    is_val = np.isin(groups, unique[order[:n_val]])
    return np.flatnonzero(~is_val).astype(np.int64), np.flatnonzero(is_val).astype(np.int64)


def choose_indices(count: int, limit: int | None, seed: int | list[int] = 0) -> np.ndarray:
    """At most ``limit`` of ``range(count)``, drawn with ``seed``, sorted (all when ``limit`` is ``None``).

    Raises:
        TypeError: If ``limit`` is not an integer.
        ValueError: If ``limit`` is negative.
    """
    if limit is None or limit >= count:
        if limit is not None:
            check_limit(limit)
        return np.arange(count, dtype=np.int64)
    check_limit(limit)
    chosen = np.random.default_rng(seed).choice(count, size=int(limit), replace=False)
    return np.sort(chosen).astype(np.int64)


def check_limit(limit: int | None, name: str = "limit") -> None:
    """``limit`` must be ``None`` or an integer >= 0."""
    if limit is None:
        return
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)):
        raise TypeError(f"{name} must be an int or None; got {type(limit).__name__}")
    if limit < 0:
        raise ValueError(f"{name} must be >= 0 or None; got {limit}")
