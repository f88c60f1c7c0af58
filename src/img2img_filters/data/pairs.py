"""Photo pairs: an input folder and a target folder matched by name, learnt as they are.

``inputs/a/b.jpg`` pairs with ``targets/a/b.png``: the relative path without
its extension is the pair's name. Inputs are anything
:func:`img2img_filters.imageio.read_image` reads (RGB, gray or RGBA, 8 or 16 bits);
targets are 1- or 3-channel 8/16-bit PNG/TIFF, float32 TIFF or ``.npy``
(:func:`img2img_filters.data.targets.read_target`), kept at their depth. Pairs whose
sides differ in size, inputs without a target and targets without an input
are skipped and listed (``dataset.skipped``) with the reason.

Photos are held whole, at their own depth (uint8/uint16 inputs, uint8/uint16/
float32 targets). Training items are aligned random crops, new every epoch
(drawn from ``(seed, epoch, position)`` alone, as in :mod:`img2img_filters.data.stream`);
validation items are the grid crops of the held-out pairs, the same every time.
The split is by pair: one photo is never on both sides.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from img2img_filters.data.crops import check_crop_params, grid_positions
from img2img_filters.data.split import check_fraction, check_limit, choose_indices, split_by_group
from img2img_filters.data.targets import TARGET_EXTENSIONS, read_target, target_scale
from img2img_filters.filters.external import PAIRS_PREFIX, GivenTargets
from img2img_filters.imageio import READ_FORMATS, ImageReadError, list_images, read_image

__all__ = ["PairedCrops", "load_pairs", "match_pairs"]

_log = logging.getLogger(__name__)

_LOG = logging.getLogger(__name__)
_SHOWN = 10  # skipped pairs named in the warning; all are on the datasets
_NAMES_SHOWN = 3  # names from each side in the error when nothing matches


def _name(path: Path, root: Path) -> str:
    """A pair's name: the path relative to its folder, without the extension (``a/b``)."""
    return path.relative_to(root).with_suffix("").as_posix()


def match_pairs(
    inputs: str | os.PathLike[str], targets: str | os.PathLike[str]
) -> tuple[list[tuple[str, Path, Path]], list[tuple[str, str]]]:
    """Match input and target files by their relative path without the extension.

    Args:
        inputs: The folder of input photos (recursive; see :func:`~img2img_filters.imageio.list_images`).
        targets: The folder of targets (``.png``, ``.tif``, ``.tiff``, ``.npy``).

    Returns:
        ``(pairs, skipped)``: ``(name, input, target)`` sorted by name, and ``(name, reason)``
        for each file left without a partner.

    Raises:
        FileNotFoundError: If a folder does not exist.
        ValueError: If no file matches another, naming a few files of each side.
    """
    roots = Path(inputs), Path(targets)
    sides: list[dict[str, Path]] = [{}, {}]
    skipped: list[tuple[str, str]] = []
    for side, (root, extensions, what) in enumerate(
        ((roots[0], None, "input"), (roots[1], TARGET_EXTENSIONS, "target"))
    ):
        if not root.is_dir():
            raise FileNotFoundError(f"{what} folder {str(root)!r} not found (expected a folder)")
        files = list_images(root) if extensions is None else list_images(root, extensions)
        for path in files:
            name = _name(path, root)
            if name in sides[side]:
                skipped.append((name, f"two {what} files share this name; {path.name} is ignored"))
                continue
            sides[side][name] = path
    found, given = sides
    both = sorted(set(found) & set(given))
    if not both:
        shown = [", ".join(sorted(side)[:_NAMES_SHOWN]) or "(no files)" for side in sides]
        raise ValueError(
            f"no input in {str(roots[0])!r} has a target of the same name in {str(roots[1])!r} "
            f"(pairs match by relative path without extension); inputs: {shown[0]}; "
            f"targets: {shown[1]}"
        )
    skipped += [(n, "an input without a target") for n in sorted(set(found) - set(given))]
    skipped += [(n, "a target without an input") for n in sorted(set(given) - set(found))]
    return [(n, found[n], given[n]) for n in both], skipped


def _read_pair(
    name: str, source: Path, target: Path, crop_size: int
) -> tuple[np.ndarray, np.ndarray] | str:
    """The input ``(H, W, 3)`` and target ``(H, W, C)`` of a pair, or why it cannot be used."""
    try:
        photo = read_image(source, keep_16bit=True)  # allow-listed formats, bounded size
        with Image.open(source, formats=list(READ_FORMATS)) as header:  # the header only
            if "A" in header.mode or "transparency" in header.info:
                _LOG.info("pair %s: the input's alpha channel is dropped", name)
    except (ImageReadError, OSError) as error:
        return f"input unreadable: {' '.join(str(error).split())}"
    try:
        values = read_target(target)
    except (ImageReadError, OSError) as error:
        return f"target unreadable: {' '.join(str(error).split())}"
    if photo.shape[:2] != values.shape[:2]:
        return (
            f"input is {photo.shape[0]}x{photo.shape[1]}, target {values.shape[0]}x"
            f"{values.shape[1]} (a pair must have equal sizes)"
        )
    if min(photo.shape[:2]) < crop_size:
        return f"smaller than one {crop_size}x{crop_size} crop ({photo.shape[0]}x{photo.shape[1]})"
    return photo, values


class PairedCrops(torch.utils.data.Dataset):
    """Aligned crops of photo pairs: ``(input (3, c, c), target (C, c, c))`` float32 items.

    Inputs are scaled by their depth (``/255`` or ``/65535``), targets too (floats as is).

    Args:
        photos: The inputs, ``(H, W, 3)`` uint8 or uint16 each.
        targets: The targets, ``(H, W, C)`` uint8, uint16 or float32, the same sizes.
        teacher: The :class:`~img2img_filters.filters.external.GivenTargets` that describes the targets.
        crop_size: Side of the crops.
        seed: Seed of the random crops.
        fixed: The grid crops, the same every epoch (validation); else as many random
            crops per photo and epoch as its grid holds.
        names: The pairs' names.
        source: Where the pairs came from.
        skipped: ``(name, reason)`` of the pairs left out.
    """

    def __init__(
        self,
        photos: Sequence[np.ndarray],
        targets: Sequence[np.ndarray],
        teacher: GivenTargets,
        *,
        crop_size: int,
        seed: int = 0,
        fixed: bool = False,
        names: Sequence[str] = (),
        source: str = "",
        skipped: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.photos = list(photos)
        self.targets = list(targets)
        self.filter = teacher
        self.crop_size = int(crop_size)
        self.seed = int(seed)
        self.fixed = bool(fixed)
        self.names = list(names)
        self.source = source
        self.skipped = [(str(n), str(r)) for n, r in skipped]
        self.epoch = 0
        size = self.crop_size
        self._grids = [grid_positions(*p.shape[:2], size, size) for p in self.photos]
        counts = np.array([len(g) for g in self._grids], dtype=np.int64)
        self.groups = np.repeat(np.arange(len(self.photos), dtype=np.int64), counts)
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def out_channels(self) -> int:
        """Channels of the targets."""
        return self.filter.out_channels

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of every item."""
        return self.crop_size, self.crop_size

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose random crops are drawn (ignored when ``fixed``)."""
        self.epoch = int(epoch)

    def _corner(self, position: int) -> tuple[int, int, int]:
        """``(photo, y, x)`` of item ``position`` in the current epoch."""
        index = int(self.groups[position])
        if self.fixed:
            y, x = self._grids[index][position - int(self._starts[index])]
            return index, y, x
        height, width = self.photos[index].shape[:2]
        u, v = np.random.default_rng([self.seed, self.epoch, position]).random(2)
        return index, int(u * (height - self.crop_size + 1)), int(v * (width - self.crop_size + 1))

    def batch(
        self, positions: Sequence[int] | np.ndarray, device: torch.device | str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs ``(B, 3, c, c)`` and targets ``(B, C, c, c)``, float32, on ``device``."""
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        if len(positions) and (positions.min() < 0 or positions.max() >= len(self)):
            raise IndexError(f"positions must lie in [0, {len(self)}); got {positions.tolist()}")
        size = self.crop_size
        inputs = np.empty((len(positions), 3, size, size), dtype=np.float32)
        targets = np.empty((len(positions), self.out_channels, size, size), dtype=np.float32)
        for slot, position in enumerate(positions):
            index, y, x = self._corner(int(position))
            for out, array in ((inputs, self.photos[index]), (targets, self.targets[index])):
                crop = array[y : y + size, x : x + size].transpose(2, 0, 1)
                np.multiply(crop, np.float32(target_scale(array.dtype)), out=out[slot])
        return torch.from_numpy(inputs).to(device), torch.from_numpy(targets).to(device)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -len(self) <= position < len(self):
            raise IndexError(f"index {position} is out of range for a dataset of {len(self)} items")
        inputs, targets = self.batch([position % len(self)])
        return inputs[0], targets[0]

    def __repr__(self) -> str:
        return (
            f"PairedCrops({len(self.photos)} pairs, {len(self)} crops {self.crop_size}x"
            f"{self.crop_size}, {'fixed' if self.fixed else 'random'}, source={self.source!r})"
        )


# Over 80 lines only for its docstring.
def load_pairs(
    inputs: str | os.PathLike[str],
    targets: str | os.PathLike[str],
    *,
    crop_size: int = 64,
    val_fraction: float = 0.2,
    seed: int = 0,
    limit: int | None = None,
) -> tuple[PairedCrops, PairedCrops]:
    """Train and validation :class:`PairedCrops` from an input folder and a target folder.

    Args:
        inputs: The folder of input photos.
        targets: The folder of targets, matched by name (see :func:`match_pairs`).
        crop_size: Side of the crops.
        val_fraction: Share of the pairs held out, in [0, 1) (0: validate on the training pairs).
        seed: Seed of the split, the ``limit`` subset and the crops.
        limit: Use at most this many training pairs (and a matching share of validation ones).

    Returns:
        ``(train, val)``; both carry ``skipped`` (``(name, reason)`` of every pair left out).

    Raises:
        FileNotFoundError: If a folder is missing.
        ValueError: If nothing matches, no pair is usable, or a parameter is bad.
    """
    check_crop_params(crop_size, None)
    val_fraction = check_fraction(val_fraction)
    check_limit(limit)
    pairs, skipped = match_pairs(inputs, targets)
    train_rows, val_rows = split_by_group(np.arange(len(pairs)), val_fraction, seed)
    if limit is not None:
        train_rows = train_rows[choose_indices(len(train_rows), limit, [int(seed), 1])]
        share = max(1, round(limit * val_fraction / (1 - val_fraction))) if val_fraction else 0
        val_rows = val_rows[choose_indices(len(val_rows), share, [int(seed), 2])]
    loaded: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for row in sorted({*train_rows.tolist(), *val_rows.tolist()}):
        name, source, target = pairs[row]
        result = _read_pair(name, source, target, crop_size)
        if isinstance(result, str):
            skipped.append((name, result))
        else:
            loaded[row] = result
    channels = Counter(values.shape[2] for _, values in loaded.values()).most_common(1)
    for row in list(loaded):
        if loaded[row][1].shape[2] != channels[0][0]:
            skipped.append(
                (
                    pairs[row][0],
                    f"target has {loaded[row][1].shape[2]} channels, most have {channels[0][0]}",
                )
            )
            del loaded[row]
    if not loaded:
        raise ValueError(
            f"none of the {len(pairs)} pairs of {str(inputs)!r} and {str(targets)!r} is usable: "
            + "; ".join(f"{n}: {r}" for n, r in skipped[:_NAMES_SHOWN])
        )
    teacher = GivenTargets(f"{PAIRS_PREFIX}{targets}")
    _describe(teacher, [values for _, values in loaded.values()])
    _warn(skipped, len(pairs), inputs)
    source = f"pairs:{inputs}|{targets}"

    def dataset(rows: np.ndarray, fixed: bool) -> PairedCrops:
        kept = [int(r) for r in rows if int(r) in loaded]
        return PairedCrops(
            [loaded[r][0] for r in kept],
            [loaded[r][1] for r in kept],
            teacher,
            crop_size=crop_size,
            seed=seed,
            fixed=fixed,
            names=[pairs[r][0] for r in kept],
            source=source,
            skipped=skipped,
        )

    train = dataset(train_rows, fixed=False)
    val = dataset(val_rows if val_fraction > 0 else train_rows, fixed=True)
    if len(train) == 0:
        raise ValueError(f"no training pair of {str(inputs)!r} is usable (see .skipped)")
    return train, val


def _describe(teacher: GivenTargets, targets: list[np.ndarray]) -> None:
    """Tell the teacher the targets' type (float32 if any is), channels and float range."""
    floats = [t for t in targets if t.dtype == np.float32]
    if floats:
        low = min(float(t.min()) for t in floats)
        high = max(float(t.max()) for t in floats)
        if len(floats) < len(targets):  # integer targets span [0, 1] once scaled
            low, high = min(low, 0.0), max(high, 1.0)
        teacher.describe_targets(np.float32, targets[0].shape[2], low, high)
    else:
        teacher.describe_targets(np.uint16, targets[0].shape[2], 0.0, 1.0)


def _warn(skipped: list[tuple[str, str]], total: int, where: str | os.PathLike[str]) -> None:
    if not skipped:
        return
    shown = "; ".join(f"{name}: {reason}" for name, reason in skipped[:_SHOWN])
    more = f"; and {len(skipped) - _SHOWN} more" if len(skipped) > _SHOWN else ""
    _log.warning(
        "skipped %d files among %d pairs of %r (every one is listed with its reason on the "
        "datasets' .skipped): %s%s",
        len(skipped),
        total,
        str(where),
        shown,
        more,
    )
