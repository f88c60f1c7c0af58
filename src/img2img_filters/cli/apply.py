"""``img2img apply``: filter an image, or a folder of images, with a trained model."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from img2img_filters.cli.common import add_device, batch_size, positive_int, tile_int

_FORMATS = {"png": (".png",), "npy": (".npy",), "tif": (".tif", ".tiff")}
_LOSSY = (".jpg", ".jpeg", ".webp")
_SCALES = (
    "auto",
    "range",
    "abs",
)  # img2img_filters.imagewrite.SCALES (not imported: keeps --help fast)

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``apply`` sub-command."""
    parser = subparsers.add_parser(
        "apply",
        help="filter an image or a folder of images with a trained model",
        description="Filter an image of any size, or every image of a folder (sub-folders "
        "mirrored), with a trained model. Output: a float32 .npy (exact), or a PNG/TIFF whose "
        "values are mapped to 0..255 or 0..65535 (see --scale). Inputs: PNG, JPEG, BMP, TIFF, "
        "WebP or GIF, 8- and 16-bit, gray (repeated to RGB), RGBA "
        "(alpha dropped). Large images are filtered in tiles, in bounded memory; linear "
        "models of one convolution run as one OpenCV filter.",
    )
    parser.add_argument("model", help="a checkpoint (model.safetensors, .pt) or a run folder")
    parser.add_argument("input", help="an image file, or a folder of images")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        help="output file (.npy, .png, .tif) for an image, or a folder to write it into "
        "(as STEM.png); output folder for a folder. Never an input unless --overwrite-input",
    )
    _add_output_options(parser.add_argument_group("output", "the files written"))
    _add_safety_options(parser.add_argument_group("safety", "what may be replaced or read"))
    running = parser.add_argument_group("running", "how the model runs")
    _add_running_options(running)
    add_device(running)
    parser.set_defaults(handler=run)


def _add_output_options(group: argparse._ArgumentGroup) -> None:
    """Format, bit depth and value scale of the outputs."""
    group.add_argument(
        "--format",
        choices=sorted(_FORMATS),
        default=None,
        help="output format for a folder; for a file, the extension decides "
        "(default: png for a folder)",
    )
    group.add_argument(
        "--bit-depth",
        type=int,
        choices=(8, 16, 32),
        default=8,
        help="PNG/TIFF bit depth; 32: float TIFF holding the raw values, as .npy (default: 8)",
    )
    group.add_argument(
        "--scale",
        choices=_SCALES,
        default=None,
        help="PNG/TIFF values: auto (each image's 1st..99th percentile), range (the filter's "
        "output range from the model's metadata; [0, 1] without), abs (|value| from 0 to the "
        "range's largest magnitude). .npy keeps the raw values (default: auto for a filter "
        "with negative outputs (edges), else range)",
    )


def _add_safety_options(group: argparse._ArgumentGroup) -> None:
    """Overwriting outputs or inputs, and the largest image read."""
    group.add_argument(
        "--overwrite",
        action="store_true",
        help="folder: replace existing outputs (else skipped); image: replace an existing file "
        "whose name img2img made (-o FOLDER or -o NAME without an extension)",
    )
    group.add_argument(
        "--overwrite-input",
        action="store_true",
        help="allow -o to be the input image or the input folder (refused otherwise)",
    )
    group.add_argument(
        "--max-pixels",
        type=positive_int,
        default=None,
        help="refuse images of more pixels (default: $IMG2IMG_MAX_PIXELS or 178956970)",
    )


def _add_running_options(group: argparse._ArgumentGroup) -> None:
    """Tiles, batches and the OpenCV fast path."""
    group.add_argument(
        "--tile",
        type=tile_int,
        default=None,
        help="tile side in pixels, at least the model's receptive field "
        "(default: chosen from the memory available)",
    )
    group.add_argument(
        "--batch",
        type=batch_size,
        default=1,
        help="folder: filter up to N images of one size together when each fits a tile",
    )
    group.add_argument(
        "--fast",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="--fast folds any linear model into one OpenCV filter (a deeper stack is then "
        "exact only away from the borders); --no-fast always runs the network "
        "(default: fold when exact)",
    )


def resolve_model_path(path: str | Path) -> Path:
    """A checkpoint path from a checkpoint or a run folder."""
    # loaded when the command runs, so that `img2img --help` stays fast
    from img2img_filters.checkpoint import resolve_checkpoint

    return resolve_checkpoint(path)


def output_range(model) -> tuple[float, float] | None:
    """The output range of the filter a model learned, from its metadata."""
    # loaded when the command runs, so that `img2img --help` stays fast
    from img2img_filters.infer import model_output_range

    return model_output_range(model)


def _single_output(args: argparse.Namespace) -> Path:
    """The output file for one image, checked: never the input, never an unrelated file.

    ``-o FOLDER`` (an existing folder, or a name ending in ``/``) writes
    ``FOLDER/<input stem>.<ext>``, and ``-o NAME`` without an extension writes
    ``NAME.<ext>`` (``ext`` from ``--format``, default png); such a name that exists
    is replaced only with ``--overwrite``. ``--format`` must agree with an explicit
    extension. An output that is the input (symbolic and hard links resolved) is
    refused unless ``--overwrite-input``.
    """
    output, format = args.output, args.format
    path = Path(output)
    extension = _FORMATS[format or "png"][0]
    made = False
    if path.is_dir() or output.endswith(("/", os.sep)):
        path, made = path / (Path(args.input).stem + extension), True
    elif not path.suffix:
        path, made = path.with_suffix(extension), True
    elif format is not None and path.suffix.lower() not in _FORMATS[format]:
        raise ValueError(
            f"--format {format} disagrees with the output file {output!r} (expected an "
            f"extension of {list(_FORMATS[format])})"
        )
    if not args.overwrite_input and _same_file(Path(args.input), path):
        raise ValueError(
            f"-o {output!r} would write over the input image {args.input!r}; choose another "
            "output file (or pass --overwrite-input to replace the input)"
        )
    if made and os.path.lexists(path) and not args.overwrite:
        raise ValueError(
            f"-o {output!r}: {str(path)!r} exists; pass --overwrite to replace it, or name "
            "the output file"
        )
    return path


def _same_file(first: Path, second: Path) -> bool:
    """Whether two paths lead to the same file (symbolic links resolved, hard links too)."""
    if os.path.realpath(first) == os.path.realpath(second):
        return True
    try:
        return os.path.samefile(first, second)
    except (OSError, ValueError):
        return False


def _run_folder(args: argparse.Namespace, model) -> int:
    # loaded when the command runs, so that `img2img --help` stays fast
    from tqdm.auto import tqdm

    from img2img_filters.infer import apply_folder
    from img2img_filters.infer.folder import failure_line

    def report(path: Path, reason: str) -> None:
        tqdm.write(f"img2img: failed: {failure_line(path, reason)}", file=sys.stderr)

    summary = apply_folder(
        model,
        args.input,
        args.output,
        format=args.format or "png",
        bit_depth=args.bit_depth,
        scale=args.scale,
        overwrite=args.overwrite,
        overwrite_input=args.overwrite_input,
        tile=args.tile,
        device=args.device,
        fast=args.fast,
        batch=args.batch,
        max_pixels=args.max_pixels,
        progress=sys.stderr.isatty(),
        on_failure=report,
    )
    print(summary.format())
    return 0 if summary.ok else 1


def run(args: argparse.Namespace) -> int:
    """Handle ``img2img apply``."""
    # loaded when the command runs, so that `img2img --help` stays fast
    from img2img_filters.checkpoint import load_model
    from img2img_filters.imageio import write_image
    from img2img_filters.imagewrite import default_scale, scaled_for_writing
    from img2img_filters.infer import apply_filter

    model = load_model(resolve_model_path(args.model))
    if Path(args.input).is_dir():
        return _run_folder(args, model)
    output = _single_output(args)
    result = apply_filter(
        args.input,
        model,
        tile=args.tile,
        device=args.device,
        fast=args.fast,
        max_pixels=args.max_pixels,
        progress=sys.stderr.isatty(),
    )
    values, limits = result, None
    if output.suffix.lower() != ".npy" and args.bit_depth != 32:
        filter_range = output_range(model)
        scale = args.scale or default_scale(filter_range)
        values, limits = scaled_for_writing(result, scale, filter_range)
        signed = filter_range[0] < 0 if filter_range else float(result.min()) < 0
        if output.suffix.lower() in _LOSSY and signed:
            logger.warning(
                "%s is a lossy format: the filter's signed output loses precision "
                "there; .png, .tif or .npy keep it",
                output,
            )
    try:
        write_image(output, values, bit_depth=args.bit_depth, value_range=limits)
    except OSError as error:  # written through a temporary file: nothing partial is left
        raise OSError(
            f"cannot write {str(output)!r}: {error.strerror or error} (nothing was written)"
        ) from None
    print(f"wrote {output} ({result.shape[1]}x{result.shape[0]})")
    return 0
