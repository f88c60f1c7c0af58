"""Filter every image of a folder, mirroring its sub-folders, and report what happened."""

from __future__ import annotations

import itertools
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn
from tqdm.auto import tqdm

from img2img_filters.devices import DeviceLike
from img2img_filters.imageio import list_images, max_pixels_limit, read_image, write_image
from img2img_filters.imagewrite import SCALES, default_scale, scaled_for_writing
from img2img_filters.infer.predict import Predictor, model_output_range

__all__ = [
    "OUTPUT_FORMATS",
    "SCALES",
    "FolderSummary",
    "apply_folder",
    "default_scale",
    "failure_line",
    "output_paths",
    "scaled_for_writing",
]

#: ``format`` -> the extension of the files written.
OUTPUT_FORMATS = {"png": ".png", "npy": ".npy", "tif": ".tif"}

# The longest file name (bytes) most file systems take.
_NAME_MAX = 255

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
    """The output file of each input, all distinct: the same relative path, with ``suffix``.

    Every name is decided before anything is written, and no two inputs share an
    output (names are compared ignoring case, so that a case-insensitive file system
    loses nothing either): inputs that would share one (``a.jpg``, ``a.png``) keep
    their extension in the name instead (``a.jpg.png``, ``a.png.png``), and a name
    that is still taken (``a.jpg.png`` is also the output of an input ``a.jpg.png``)
    gets a number (``a.jpg-2.png``). A name too long for the file system is
    shortened. The names depend only on the inputs, so re-runs find the same ones.

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
    counts = Counter(_key(name) for name in plain)
    chosen: list[Path | None] = [name if counts[_key(name)] == 1 else None for name in plain]
    taken = {_key(name) for name in chosen if name is not None}
    for index, relative in enumerate(relatives):
        if chosen[index] is None:
            for number in itertools.count(1):
                name = relative.with_name(_numbered(relative.name, number, suffix))
                if _key(name) not in taken:
                    break
            chosen[index] = name
            taken.add(_key(name))
    return [output_dir / name for name in chosen]


def _key(relative: Path) -> str:
    return str(relative).casefold()


def _numbered(name: str, number: int, suffix: str) -> str:
    """``name + suffix`` for ``number`` 1, else ``name-N + suffix``; cut to fit a file name."""
    tail = (f"-{number}" if number > 1 else "") + suffix
    while len(os.fsencode(name + tail)) > _NAME_MAX and len(name) > 1:
        name = name[:-1]
    return name + tail


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _real(path: Path) -> Path:
    """``path`` with every symbolic link resolved; a loop is left as it is (never raises)."""
    return Path(os.path.realpath(path))


def _inside(path: Path, folder: Path) -> bool:
    real, base = _real(path), _real(folder)
    return real == base or base in real.parents


def _file_id(path: Path) -> tuple[int, int] | None:
    """The ``(device, inode)`` of the file ``path`` leads to, or ``None`` if there is none."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return info.st_dev, info.st_ino


def _check_options(format: str, bit_depth: int, batch: int, scale: str | None) -> None:
    """Refuse a bad ``format``, ``bit_depth``, ``batch`` or ``scale`` with a ``ValueError``."""
    if format not in OUTPUT_FORMATS:
        raise ValueError(f"format must be one of {sorted(OUTPUT_FORMATS)}; got {format!r}")
    if bit_depth not in (8, 16, 32):
        raise ValueError(f"bit_depth must be 8, 16 or 32; got {bit_depth!r}")
    if bit_depth == 32 and format != "tif":
        raise ValueError(f"bit_depth 32 (float samples) needs format 'tif'; got {format!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer; got {batch!r}")
    if scale is not None and scale not in SCALES:
        raise ValueError(f"scale must be one of {list(SCALES)}; got {scale!r}")


def _check_not_input_folder(input_dir: Path, output_dir: Path, overwrite_input: bool) -> None:
    """Refuse an output folder that is the input folder (symbolic links resolved), or a file.

    Raises:
        NotADirectoryError: If ``output_dir`` is an existing file.
        ValueError: If they are the same folder and ``overwrite_input`` is off.
    """
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise NotADirectoryError(
            f"output folder {str(output_dir)!r} is a file; name a folder (new or existing)"
        )
    if not overwrite_input and _real(input_dir) == _real(output_dir):
        raise ValueError(
            f"output folder {str(output_dir)!r} is the input folder {str(input_dir)!r}: outputs "
            "would be written among (and could replace) the input images; choose another output "
            "folder (or pass overwrite_input=True / --overwrite-input)"
        )


class _FolderRun:
    """The images of one :func:`apply_folder` run: filtered, written, failures recorded.

    Images that each fit a tile wait in groups of one size and dtype, and go
    through the network together once a group holds ``batch`` images or all the
    waiting images hold more than :data:`PENDING_VALUES` values.
    """

    def __init__(
        self,
        predictor: Predictor,
        summary: FolderSummary,
        bar: tqdm,
        format: str,
        bit_depth: int,
        scale: str,
        filter_range: tuple[float, float],
        on_failure: Callable[[Path, str], None] | None,
    ) -> None:
        self.predictor = predictor
        self.summary = summary
        self.bar = bar
        self.format = format
        self.bit_depth = bit_depth
        self.scale = scale
        self.filter_range = filter_range
        self.on_failure = on_failure
        self.pending: dict[tuple, list[tuple[Path, Path, np.ndarray]]] = {}

    def fail(self, path: Path, error: BaseException) -> None:
        """Record that ``path`` failed, and why."""
        reason = _one_line(error)
        self.summary.failed.append((path, reason))
        if self.on_failure is not None:
            self.on_failure(path, reason)

    def write(self, source: Path, target: Path, result: np.ndarray) -> None:
        """Write the result ``(H, W, C)`` of ``source`` to ``target``, scaled for its format."""
        if result.shape[-1] == 1:
            result = result[..., 0]  # (H, W), as apply_filter returns it
        limits = None
        try:
            if self.format != "npy" and self.bit_depth != 32:
                result, limits = scaled_for_writing(result, self.scale, self.filter_range)
            write_image(target, result, bit_depth=self.bit_depth, value_range=limits)
        except ValueError as error:
            self.fail(source, error)
        except OSError as error:  # written through a temporary file: nothing partial is left
            self.fail(source, OSError(f"cannot write {target}: {error.strerror or error}"))
        else:
            self.summary.done.append(source)

    def filter(self, source: Path, target: Path, image: np.ndarray, batch: int) -> None:
        """Filter ``image`` and write it, or let it wait for others of its size."""
        predictor = self.predictor
        height, width = image.shape[:2]
        if (
            batch > 1
            and predictor.network is not None
            and max(height, width) <= (predictor.tile or 0)
        ):
            key = (image.shape, image.dtype.str)
            self.pending.setdefault(key, []).append((source, target, image))
            if len(self.pending[key]) >= batch:
                self.flush(key)
            elif sum(len(g) * g[0][2].size for g in self.pending.values()) > PENDING_VALUES:
                for other in list(self.pending):
                    self.flush(other)
            return
        try:
            result = predictor(image)
        except (ValueError, TypeError, RuntimeError) as error:
            self.fail(source, error)
        else:
            self.write(source, target, result)
        self.bar.update()

    def flush(self, key: tuple) -> None:
        """Run one waiting group through the network in one forward pass and write it."""
        group = self.pending.pop(key)
        try:
            results = self.predictor.predict_batch(np.stack([image for _, _, image in group]))
        except (ValueError, TypeError, RuntimeError) as error:
            for source, _, _ in group:
                self.fail(source, error)
        else:
            for (source, target, _), result in zip(group, results, strict=True):
                self.write(source, target, result)
        self.bar.update(len(group))

    def finish(self) -> None:
        """Run the groups still waiting."""
        for key in list(self.pending):
            self.flush(key)


# Over 80 lines only for its docstring.
def apply_folder(
    model: nn.Module,
    input_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    format: str = "png",
    bit_depth: int = 8,
    value_range: tuple[float, float] | None = None,
    scale: str | None = None,
    overwrite: bool = False,
    overwrite_input: bool = False,
    tile: int | None = None,
    device: DeviceLike = "auto",
    fast: bool | None = None,
    batch: int = 1,
    max_pixels: int | None = None,
    progress: bool = False,
    on_failure: Callable[[Path, str], None] | None = None,
) -> FolderSummary:
    """Filter every image under ``input_dir`` into ``output_dir``.

    Images are found with :func:`img2img_filters.imageio.list_images` (sorted, recursive;
    files under ``output_dir`` are left out when it lies inside ``input_dir``),
    read with 16-bit samples kept, filtered with :class:`Predictor` and written
    with :func:`img2img_filters.imageio.write_image` at the same relative path with the
    format's extension; inputs that would share an output get distinct names,
    chosen before anything is written (see :func:`output_paths`). Each output goes
    to a temporary file in its folder and is renamed into place, so a failure
    leaves no partial file. A file that cannot be read (a bad image, a FIFO, a
    symbolic link loop), filtered or written is recorded with its reason and the
    run goes on.

    Args:
        model: The trained model.
        input_dir: The folder of images.
        output_dir: Where the results go (created as needed).
        format: ``"png"``, ``"tif"`` (scaled to integers) or ``"npy"`` (float32, exact).
        bit_depth: 8 or 16, for PNG and TIFF; 32 for float TIFF (raw values, as ``.npy``).
        value_range: The output values mapped to black and white in PNG and TIFF,
            for every image (overrides ``scale``).
        scale: How PNG and TIFF values are mapped, per image (see
            :func:`scaled_for_writing`): ``"auto"``, ``"range"`` or ``"abs"``; default
            ``"auto"`` for a filter with negative outputs, else ``"range"`` (the
            filter's range from the model's metadata, see :func:`model_output_range`;
            ``(0, 1)`` without metadata). ``.npy`` outputs keep the raw values.
        overwrite: Replace existing outputs (otherwise they are skipped, unread).
        overwrite_input: Allow ``output_dir`` to be ``input_dir`` and, with
            ``overwrite``, an output to replace an input image (symbolic and hard
            links resolved); otherwise the first is a ``ValueError`` and the second a
            failure of that image.
        tile: Tile side (see :class:`Predictor`).
        device: Where the network runs.
        fast: The folded fast path (see :class:`Predictor`).
        batch: Up to this many images of one size that each fit a tile go through
            the network in one forward pass.
        max_pixels: The largest image read (see :func:`img2img_filters.imageio.max_pixels_limit`).
        progress: Show a progress bar (tqdm) over the images.
        on_failure: Called with ``(input path, reason)`` as each failure happens.

    Returns:
        The :class:`FolderSummary`.

    Raises:
        FileNotFoundError: If ``input_dir`` does not exist.
        NotADirectoryError: If ``input_dir`` is not a folder, or ``output_dir`` is a file.
        ValueError: For a bad ``format``, ``bit_depth``, ``scale``, ``batch`` or ``tile``, or an
            ``output_dir`` that is ``input_dir`` without ``overwrite_input``.
    """
    started = time.perf_counter()
    _check_options(format, bit_depth, batch, scale)
    max_pixels = max_pixels_limit(max_pixels)
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    _check_not_input_folder(input_dir, output_dir, overwrite_input)
    predictor = Predictor(model, tile=tile, device=device, fast=fast)
    filter_range = model_output_range(model) if value_range is None else value_range
    scale = "range" if value_range is not None else scale or default_scale(filter_range)
    inputs = list_images(input_dir)
    if _real(output_dir) != _real(input_dir):  # earlier outputs inside the input folder
        inputs = [path for path in inputs if not _inside(path, output_dir)]
    outputs = output_paths(inputs, input_dir, output_dir, OUTPUT_FORMATS[format])
    summary = FolderSummary(input_dir, output_dir)
    input_ids = {_file_id(path) for path in inputs} - {None}
    with tqdm(total=len(inputs), unit="image", disable=None if progress else True) as bar:
        run = _FolderRun(
            predictor, summary, bar, format, bit_depth, scale, filter_range, on_failure
        )
        for source, target in zip(inputs, outputs, strict=True):
            if os.path.lexists(target) and not overwrite:
                summary.skipped.append(source)
                bar.update()
                continue
            if not overwrite_input and _file_id(target) in input_ids:
                run.fail(
                    source, ValueError(f"the output {target} is an input image (not replaced)")
                )
                bar.update()
                continue
            try:
                image = read_image(source, max_pixels=max_pixels, keep_16bit=True)
            except (ValueError, OSError) as error:
                run.fail(source, error)
                bar.update()
                continue
            run.filter(source, target, image, batch)
        run.finish()
    summary.seconds = time.perf_counter() - started
    return summary
