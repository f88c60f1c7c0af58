"""Reading image files safely, with one set of conventions; writing them (:mod:`img2img_filters.imagewrite`).

Every image read here comes back as a NumPy array ``(H, W, 3)`` RGB, whatever the
file holds (grayscale, palette, alpha, CMYK, a rotated camera JPEG), and every
failure raises :class:`ImageReadError` with a one-line message that names the file.
Only the formats of :data:`READ_FORMATS` are decoded, chosen by the file's content
(never by its name): a PostScript, PDF or SVG file named ``photo.png`` is refused
before any decoder, or any program such as Ghostscript, sees it.

>>> from img2img_filters.imageio import read_image
>>> read_image("photo.jpg").shape  # doctest: +SKIP
(480, 640, 3)
"""

from __future__ import annotations

import os
import struct
import threading
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from img2img_filters.imagefile import PNG_SIGNATURE, ImageReadError, open_regular_file, other_format
from img2img_filters.imagefile import fail as _fail
from img2img_filters.imagefile import png_chunk_problem as _png_chunk_problem
from img2img_filters.imagewrite import write_image

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "READ_FORMATS",
    "ImageReadError",
    "list_images",
    "max_pixels_limit",
    "read_image",
    "write_image",
]

#: The default largest image, in pixels, that :func:`read_image` decodes (Pillow's own
#: default error threshold). ``IMG2IMG_MAX_PIXELS`` in the environment overrides it.
MAX_PIXELS = 178_956_970

#: File extensions :func:`list_images` collects (compared in lower case).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")

#: The only formats :func:`read_image` decodes (Pillow's names), recognised by content.
READ_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP", "GIF")

_ACCEPTED = "img2img reads PNG, JPEG, BMP, TIFF, WebP and GIF"

# Rows converted to NumPy at a time: a few MiB, so no second full-size copy is made.
_STRIPE_BYTES = 2**20


def max_pixels_limit(max_pixels: int | None = None) -> int:
    """The pixel limit in force: ``max_pixels``, else ``$IMG2IMG_MAX_PIXELS``, else :data:`MAX_PIXELS`.

    Args:
        max_pixels: An explicit limit (a positive integer), or ``None``.

    Returns:
        The limit, in pixels.

    Raises:
        TypeError: If ``max_pixels`` is not an integer.
        ValueError: If the limit is not positive, or the environment variable is not an integer.
    """
    if max_pixels is None:
        text = os.environ.get("IMG2IMG_MAX_PIXELS", "").strip()
        if not text:
            return MAX_PIXELS
        try:
            max_pixels = int(text.replace("_", ""))
        except ValueError:
            raise ValueError(
                f"environment variable IMG2IMG_MAX_PIXELS must be a positive integer; got {text!r}"
            ) from None
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)):
        raise TypeError(f"max_pixels must be an int; got {type(max_pixels).__name__}")
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be a positive integer; got {max_pixels}")
    return int(max_pixels)


def _is_16bit(image: Image.Image) -> bool:
    """Whether Pillow's lazy header says the samples are 16-bit (Pillow decodes those to 8 bits)."""
    if image.mode.startswith("I;16"):
        return True
    for tile in getattr(image, "tile", ()) or ():
        args = tile[3] if len(tile) > 3 else None
        rawmode = args[0] if isinstance(args, tuple) and args else args
        if isinstance(rawmode, str) and ";16" in rawmode:
            return True
    return False


def read_image(
    path: str | os.PathLike[str], *, max_pixels: int | None = None, keep_16bit: bool = False
) -> np.ndarray:
    """Read an image file as RGB.

    Conversions:
        * grayscale (and 1-bit): the gray value replicated into 3 channels;
        * alpha (RGBA, LA, palette with transparency): the alpha channel is dropped,
          colours are kept as stored (not composited onto a background);
        * palette: expanded to RGB;
        * CMYK JPEG: converted to RGB by Pillow;
        * EXIF orientation: applied, so the array is upright (as ``cv2.imread`` does);
        * 16-bit files: ``round(v / 257)`` to uint8, unless ``keep_16bit``;
        * multi-frame files (GIF, TIFF): the first frame.

    Only :data:`READ_FORMATS` are decoded, recognised by content whatever the
    file's extension. The header is read first (Pillow opens lazily) and an image
    of more than ``max_pixels`` pixels is refused before anything is decoded.
    Truncated files are detected: Pillow's full decode raises on missing data
    (``cv2.imread`` would return gray padding), and PNG chunks are checked with
    their CRCs. Decoding peaks at about 8 bytes per pixel for 8-bit files (Pillow's
    image and the result; no other full-size copy is made) and 12 bytes per pixel
    plus the file's size for 16-bit ones (OpenCV's decoder).

    Args:
        path: The file.
        max_pixels: The largest image accepted, in pixels (default :data:`MAX_PIXELS`,
            or ``$IMG2IMG_MAX_PIXELS``); it also lifts Pillow's own bound (twice
            ``Image.MAX_IMAGE_PIXELS``) while the header is read.
        keep_16bit: Return 16-bit files as uint16 instead of converting them to uint8.

    Returns:
        ``(H, W, 3)`` RGB, uint8 (or uint16 for a 16-bit file with ``keep_16bit``).

    Raises:
        FileNotFoundError: If the file does not exist (also an :class:`ImageReadError`).
        ImageReadError: If the path is not a regular file (a folder, a FIFO, a device,
            a symbolic link loop), or the file is empty, truncated, corrupt, in another
            format, has a zero dimension, too many pixels or an unsupported sample format.
    """
    path = Path(path)
    limit = max_pixels_limit(max_pixels)
    with open_regular_file(path) as file, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = _open_checked(path, file, limit)  # reads the header only
        sixteen = _is_16bit(image)  # from the header's tiles, which loading clears
        try:
            image.load()
        except Exception as error:
            raise _fail(path, f"the file is truncated or corrupt ({error})") from None
        if image.format == "PNG":
            _verify_png(path, file, limit)
        if sixteen:
            if image.format not in ("PNG", "TIFF"):
                raise _fail(path, f"unsupported sample format (16-bit {image.format})")
            size = image.size
            del image  # Pillow's 8-bit copy is not needed: free it before OpenCV decodes
            file.seek(0)
            return _decode_16bit(path, file.read(), size, keep_16bit)
        return _to_rgb8(path, image)


_PILLOW_LIMIT_LOCK = threading.Lock()


@contextmanager
def _pillow_allows(limit: int) -> Iterator[None]:
    """Let Pillow open headers of up to ``limit`` pixels, so that ``limit`` is the one in force.

    Pillow refuses images of more than twice ``Image.MAX_IMAGE_PIXELS`` (178,956,970
    pixels by default: :data:`MAX_PIXELS`) on its own; a larger ``limit`` raises that
    bound while the header is read, then restores it.
    """
    current = Image.MAX_IMAGE_PIXELS
    if current is None or 2 * current >= limit:
        yield
        return
    with _PILLOW_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = -(-limit // 2)
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _read_formats() -> list[str]:
    """:data:`READ_FORMATS` that this Pillow can open (a build without WebP lacks one)."""
    if not all(name in Image.OPEN for name in READ_FORMATS):
        Image.init()
    return [name for name in READ_FORMATS if name in Image.OPEN]


def _open_checked(path: Path, file: BinaryIO, limit: int) -> Image.Image:
    """Open lazily and check the header: an allowed format, positive sides, at most ``limit`` pixels."""
    try:
        with _pillow_allows(limit), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # Pillow's notes on formats it skipped
            image = Image.open(file, formats=_read_formats())
    except Image.DecompressionBombError as error:
        raise _fail(
            path,
            f"the image is too large to decode safely: more than the limit of {limit:,} pixels "
            f"(max_pixels or IMG2IMG_MAX_PIXELS raise it; {error})",
        ) from None
    except UnidentifiedImageError:
        raise _fail(path, _unidentified_reason(file)) from None
    except Exception as error:
        raise _fail(path, f"the header is corrupt ({error})") from None
    width, height = image.size
    if width <= 0 or height <= 0:
        raise _fail(path, f"the image has a zero dimension ({width}x{height})")
    if width * height > limit:
        raise _fail(
            path,
            f"the image has {width}x{height} = {width * height:,} pixels, more than the limit of "
            f"{limit:,} (max_pixels or IMG2IMG_MAX_PIXELS raise it)",
        )
    return image


def _unidentified_reason(file: BinaryIO) -> str:
    """Why no allowed format opened a file: a corrupt PNG, or another format."""
    file.seek(0)
    head = file.read(24)
    if head.startswith(PNG_SIGNATURE):
        if head[12:16] == b"IHDR":
            width, height = struct.unpack(">II", head[16:24])
            if width == 0 or height == 0:
                return f"the image has a zero dimension ({width}x{height})"
        problem = _png_chunk_problem(file)
        if problem:
            return f"the PNG file is {problem}"
    other = other_format(head[:16])
    seen = f"it looks like {other}, which is never decoded; " if other else ""
    return f"not a recognised image format ({seen}{_ACCEPTED})"


def _verify_png(path: Path, file: BinaryIO, limit: int) -> None:
    """Check every PNG chunk's CRC and the final IEND chunk (Pillow's ``verify``)."""
    try:
        file.seek(0)
        with _pillow_allows(limit):
            image = Image.open(file, formats=["PNG"])
        image.verify()
    except Exception as error:
        problem = _png_chunk_problem(file)
        if problem:
            raise _fail(path, f"the PNG file is {problem}") from None
        raise _fail(path, f"the file is truncated or corrupt ({error})") from None


def _to_rgb8(path: Path, image: Image.Image) -> np.ndarray:
    """Pillow image of any 8-bit mode -> upright ``(H, W, 3)`` uint8 RGB.

    The pixels are copied a stripe of rows at a time, so the only full-size
    buffers are Pillow's image and the result.
    """
    try:
        ImageOps.exif_transpose(image, in_place=True)  # allocates only to turn the image
    except Exception as error:  # a malformed EXIF block
        raise _fail(path, f"the EXIF orientation cannot be applied ({error})") from None
    mode = image.mode
    if mode in ("I", "F") or mode.startswith("I;"):
        raise _fail(path, f"unsupported sample format (Pillow mode {mode!r})")
    width, height = image.size
    result = np.empty((height, width, 3), dtype=np.uint8)
    rows = max(1, _STRIPE_BYTES // (4 * width))
    for top in range(0, height, rows):
        stripe = image.crop((0, top, width, min(height, top + rows)))
        try:
            if mode in ("P", "PA"):
                stripe = stripe.convert("RGBA")  # resolves palette transparency without a warning
            if stripe.mode != "RGB":
                stripe = stripe.convert("RGB")
        except Exception as error:
            raise _fail(path, f"unsupported colour mode {mode!r} ({error})") from None
        result[top : top + rows] = np.asarray(stripe, dtype=np.uint8)
    return result


def _decode_16bit(path: Path, data: bytes, size: tuple[int, int], keep_16bit: bool) -> np.ndarray:
    """Decode a 16-bit PNG or TIFF with OpenCV (Pillow keeps only 8 bits of 16-bit colour)."""
    flags = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_COLOR  # applies EXIF orientation, drops alpha
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    del data
    if decoded is None or decoded.ndim != 3 or decoded.shape[2] != 3:
        raise _fail(path, "OpenCV cannot decode this 16-bit image")
    if decoded.dtype != np.uint16:
        raise _fail(path, f"unsupported sample format ({decoded.dtype} from a 16-bit header)")
    if sorted(decoded.shape[:2]) != sorted(size):
        raise _fail(path, f"decoded size {decoded.shape[:2]} disagrees with the header {size}")
    cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB, dst=decoded)  # in place: no second copy
    if keep_16bit:
        return decoded
    # round(v / 257) exactly: no integer v sits on a .5 boundary, so (v + 128) // 257 agrees.
    height, width = decoded.shape[:2]
    result = np.empty((height, width, 3), dtype=np.uint8)
    rows = max(1, _STRIPE_BYTES // (12 * width))
    for top in range(0, height, rows):
        stripe = decoded[top : top + rows].astype(np.uint32)
        result[top : top + rows] = (stripe + 128) // 257
    return result


def list_images(
    folder: str | os.PathLike[str], extensions: Iterable[str] = IMAGE_EXTENSIONS
) -> list[Path]:
    """Every image file under ``folder``, recursively, in a sorted deterministic order.

    Extensions are compared case-insensitively. Hidden files and folders (names
    starting with ``.``) are left out; symbolic links to folders are not followed.
    The order is that of the relative paths' parts, so it does not depend on the
    file system.

    Args:
        folder: The folder to walk.
        extensions: The extensions to collect (default :data:`IMAGE_EXTENSIONS`).

    Returns:
        The image paths (each ``folder / relative``).

    Raises:
        FileNotFoundError: If ``folder`` does not exist.
        NotADirectoryError: If ``folder`` is not a directory.
    """
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"image folder {str(folder)!r} not found")
    if not folder.is_dir():
        raise NotADirectoryError(f"{str(folder)!r} is not a folder of images")
    wanted = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    found: list[tuple[tuple[str, ...], Path]] = []
    for current, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        base = Path(current)
        for name in filenames:
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in wanted:
                continue
            full = base / name
            found.append((full.relative_to(folder).parts, full))
    found.sort(key=lambda item: item[0])
    return [full for _, full in found]
