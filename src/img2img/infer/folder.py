"""Filter every image of a folder, mirroring its sub-folders, and report what happened."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

from img2img.devices import DeviceLike
from img2img.infer.predict import Predictor, model_output_range

__all__ = ["OUTPUT_FORMATS", "FolderSummary", "apply_folder", "failure_line", "output_paths"]

#: ``format`` -> the extension of the files written.
OUTPUT_FORMATS = {"png": ".png", "npy": ".npy", "tif": ".tif"}

#: Pixel values (``H * W * C``) that images waiting to fill a batch may hold before they run.
PENDING_VALUES = 64 * 2**20


@dataclass
class FolderSummary:
    """What :func:`apply_folder` did.

    Attributes:
        input_dir: The folder read.
        output_dir: The folder written.
        done: Input images filtered and written.
        skipped: Input images whose output existed (and ``overwrite`` was off).
        failed: ``(input image, one-line reason)`` for each image that failed.
        seconds: Wall time of the run.
    """

    input_dir: Path
    output_dir: Path
    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        """Images found."""
        return len(self.done) + len(self.skipped) + len(self.failed)

    @property
    def ok(self) -> bool:
        """Whether no image failed."""
        return not self.failed

    def format(self) -> str:
        """The summary as text: one line of counts, then one line per failure."""
        lines = [
            f"done {len(self.done)}, skipped {len(self.skipped)}, failed {len(self.failed)} "
            f"of {self.total} images in {self.seconds:.1f} s -> {self.output_dir}"
        ]
        if self.skipped:
            lines[0] += " (existing outputs skipped; --overwrite replaces them)"
        lines += [f"  failed: {failure_line(path, reason)}" for path, reason in self.failed]
        return "\n".join(lines)


def failure_line(path: Path, reason: str) -> str:
    """``"path: reason"``, or the reason alone when it names the file already."""
    return reason if str(path) in reason else f"{path}: {reason}"


def output_paths(inputs: list[Path], input_dir: Path, output_dir: Path, suffix: str) -> list[Path]:
    """The output file of each input: the same relative path, with ``suffix``.

    Inputs that differ only by extension (``a.jpg``, ``a.png``) would share an
    output; they keep their extension in the name instead (``a.jpg.png``,
    ``a.png.png``), so that nothing is overwritten and re-runs find the same names.

    Args:
        inputs: Input images (under ``input_dir``).
        input_dir: Their folder.
        output_dir: The folder to mirror them into.
        suffix: The output extension, e.g. ``".png"``.

    Returns:
        One output path per input.
    """
    relatives = [path.relative_to(input_dir) for path in inputs]
    plain = [relative.with_suffix(suffix) for relative in relatives]
    counts = Counter(plain)
    return [
        output_dir / (name if counts[name] == 1 else relative.with_name(relative.name + suffix))
        for relative, name in zip(relatives, plain, strict=True)
    ]


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def apply_folder(
    model: nn.Module,
    input_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    format: str = "png",
    bit_depth: int = 8,
    value_range: tuple[float, float] | None = None,
    overwrite: bool = False,
    tile: int | None = None,
    device: DeviceLike = "auto",
    fast: bool | None = None,
    batch: int = 1,
    max_pixels: int | None = None,
    progress: bool = False,
    on_failure: Callable[[Path, str], None] | None = None,
) -> FolderSummary:
    """Filter every image under ``input_dir`` into ``output_dir``.

    Images are found with :func:`img2img.imageio.list_images` (sorted, recursive;
    files under ``output_dir`` are left out when it lies inside ``input_dir``),
    read with 16-bit samples kept, filtered with :class:`Predictor` and written
    with :func:`img2img.imageio.write_image` at the same relative path with the
    format's extension (see :func:`output_paths`). A file that cannot be read,
    filtered or written is recorded with its reason and the run goes on.

    Args:
        model: The trained model.
        input_dir: The folder of images.
        output_dir: Where the results go (created as needed).
        format: ``"png"``, ``"tif"`` (scaled to integers) or ``"npy"`` (float32, exact).
        bit_depth: 8 or 16, for PNG and TIFF.
        value_range: The output values mapped to black and white in PNG and TIFF
            (default: the output range of the model's filter from its metadata,
            see :func:`model_output_range`; ``(0, 1)`` without metadata).
        overwrite: Replace existing outputs (otherwise they are skipped, unread).
        tile: Tile side (see :class:`Predictor`).
        device: Where the network runs.
        fast: The folded fast path (see :class:`Predictor`).
        batch: Up to this many images of one size that each fit a tile go through
            the network in one forward pass.
        max_pixels: The largest image read (see :func:`img2img.imageio.max_pixels_limit`).
        progress: Show a progress bar (tqdm) over the images.
        on_failure: Called with ``(input path, reason)`` as each failure happens.

    Returns:
        The :class:`FolderSummary`.

    Raises:
        FileNotFoundError: If ``input_dir`` does not exist.
        NotADirectoryError: If ``input_dir`` is not a folder.
        ValueError: For a bad ``format``, ``bit_depth``, ``batch`` or ``tile``.
    """
    from tqdm.auto import tqdm

    from img2img.imageio import list_images, max_pixels_limit, read_image, write_image

    started = time.perf_counter()
    if format not in OUTPUT_FORMATS:
        raise ValueError(f"format must be one of {sorted(OUTPUT_FORMATS)}; got {format!r}")
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16; got {bit_depth!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer; got {batch!r}")
    max_pixels = max_pixels_limit(max_pixels)
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    predictor = Predictor(model, tile=tile, device=device, fast=fast)
    if value_range is None and format != "npy":
        value_range = model_output_range(model)
    inputs = [p for p in list_images(input_dir) if not _inside(p, output_dir)]
    outputs = output_paths(inputs, input_dir, output_dir, OUTPUT_FORMATS[format])
    summary = FolderSummary(input_dir, output_dir)

    def fail(path: Path, error: BaseException) -> None:
        reason = _one_line(error)
        summary.failed.append((path, reason))
        if on_failure is not None:
            on_failure(path, reason)

    def write(source: Path, target: Path, result: np.ndarray) -> None:
        if result.shape[-1] == 1:
            result = result[..., 0]  # (H, W), as apply_filter returns it
        try:
            write_image(target, result, bit_depth=bit_depth, value_range=value_range)
        except (ValueError, OSError) as error:
            fail(source, error)
        else:
            summary.done.append(source)

    pending: dict[tuple, list[tuple[Path, Path, np.ndarray]]] = {}

    def flush(key: tuple) -> None:
        group = pending.pop(key)
        try:
            results = predictor.predict_batch(np.stack([image for _, _, image in group]))
        except (ValueError, TypeError, RuntimeError) as error:
            for source, _, _ in group:
                fail(source, error)
        else:
            for (source, target, _), result in zip(group, results, strict=True):
                write(source, target, result)
        bar.update(len(group))

    with tqdm(total=len(inputs), unit="image", disable=None if progress else True) as bar:
        for source, target in zip(inputs, outputs, strict=True):
            if target.exists() and not overwrite:
                summary.skipped.append(source)
                bar.update()
                continue
            try:
                image = read_image(source, max_pixels=max_pixels, keep_16bit=True)
            except (ValueError, OSError) as error:
                fail(source, error)
                bar.update()
                continue
            height, width = image.shape[:2]
            if (
                batch > 1
                and predictor.network is not None
                and max(height, width) <= (predictor.tile or 0)
            ):
                key = (image.shape, image.dtype.str)
                pending.setdefault(key, []).append((source, target, image))
                if len(pending[key]) >= batch:
                    flush(key)
                elif sum(len(g) * g[0][2].size for g in pending.values()) > PENDING_VALUES:
                    for other in list(pending):
                        flush(other)
                continue
            try:
                result = predictor(image)
            except (ValueError, TypeError, RuntimeError) as error:
                fail(source, error)
            else:
                write(source, target, result)
            bar.update()
        for key in list(pending):
            flush(key)
    summary.seconds = time.perf_counter() - started
    return summary
