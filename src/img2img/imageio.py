"""Reading and writing image files, safely and with one set of conventions.

Every image read here comes back as a NumPy array ``(H, W, 3)`` RGB, whatever the
file holds (grayscale, palette, alpha, CMYK, a rotated camera JPEG), and every
failure raises :class:`ImageReadError` with a one-line message that names the file.

>>> from img2img.imageio import read_image
>>> read_image("photo.jpg").shape  # doctest: +SKIP
(480, 640, 3)
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
import threading
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
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

_WRITE_EXTENSIONS_8 = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
_WRITE_EXTENSIONS_16 = (".png", ".tif", ".tiff")

# EXIF orientation -> the Pillow transpose that shows the photo upright.
_ORIENTATION_TAG = 0x0112


class ImageReadError(ValueError):
    """An image file that cannot be read: missing, empty, truncated, too large or not an image."""


class _MissingImageError(FileNotFoundError, ImageReadError):
    """A missing image file: both a :class:`FileNotFoundError` and an :class:`ImageReadError`."""


def _fail(path: Path, problem: str) -> ImageReadError:
    """An :class:`ImageReadError` whose one-line message names ``path`` and the problem."""
    problem = " ".join(str(problem).split())  # one line, whatever the library said
    return ImageReadError(f"cannot read image {str(path)!r}: {problem}")


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

    The header is read first (Pillow opens lazily) and an image of more than
    ``max_pixels`` pixels is refused before anything is decoded. Truncated files
    are detected: Pillow's full decode raises on missing data (``cv2.imread``
    would return gray padding), and PNG chunks are checked with their CRCs.

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
        ImageReadError: If the file is empty, truncated, not an image, has a zero
            dimension, too many pixels or an unsupported sample format.
    """
    path = Path(path)
    limit = max_pixels_limit(max_pixels)
    if not path.is_file():
        if path.exists():
            raise _fail(path, "not a regular file")
        raise _MissingImageError(f"cannot read image {str(path)!r}: file not found")
    if path.stat().st_size == 0:
        raise _fail(path, "the file is empty (0 bytes)")
    try:
        file = open(path, "rb")  # noqa: SIM115  (closed below, after the lazy image is done)
    except OSError as error:
        raise _fail(path, f"the file cannot be opened ({error.strerror or error})") from None
    with file, warnings.catch_warnings():
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
            file.seek(0)
            return _decode_16bit(path, file.read(), image, keep_16bit)
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


def _open_checked(path: Path, file: BinaryIO, limit: int) -> Image.Image:
    """Open lazily and check the header: a known format, positive sides, at most ``limit`` pixels."""
    try:
        with _pillow_allows(limit):
            image = Image.open(file)
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
    """Why Pillow could not identify a file: a PNG with a zero side, or an unknown format."""
    file.seek(0)
    head = file.read(24)
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        if width == 0 or height == 0:
            return f"the image has a zero dimension ({width}x{height})"
    return "not a recognised image format"


def _verify_png(path: Path, file: BinaryIO, limit: int) -> None:
    """Check every PNG chunk's CRC and the final IEND chunk (Pillow's ``verify``)."""
    try:
        file.seek(0)
        with _pillow_allows(limit):
            image = Image.open(file)
        image.verify()
    except Exception as error:
        raise _fail(path, f"the file is truncated or corrupt ({error})") from None


def _to_rgb8(path: Path, image: Image.Image) -> np.ndarray:
    """Pillow image of any 8-bit mode -> upright ``(H, W, 3)`` uint8 RGB."""
    try:
        image = ImageOps.exif_transpose(image)
    except Exception as error:  # a malformed EXIF block
        raise _fail(path, f"the EXIF orientation cannot be applied ({error})") from None
    mode = image.mode
    if mode in ("I", "F") or mode.startswith("I;"):
        raise _fail(path, f"unsupported sample format (Pillow mode {mode!r})")
    if mode in ("P", "PA"):
        image = image.convert("RGBA")  # resolves palette transparency without a warning
    try:
        rgb = image.convert("RGB")
    except Exception as error:
        raise _fail(path, f"unsupported colour mode {mode!r} ({error})") from None
    array = np.asarray(rgb, dtype=np.uint8)
    if array.ndim != 3 or array.shape[2] != 3:
        raise _fail(path, f"unexpected decoded shape {array.shape}")
    return np.ascontiguousarray(array)


def _decode_16bit(path: Path, data: bytes, image: Image.Image, keep_16bit: bool) -> np.ndarray:
    """Decode a 16-bit file with OpenCV (Pillow keeps only 8 bits of 16-bit colour)."""
    flags = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_COLOR  # applies EXIF orientation, drops alpha
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    if decoded is None or decoded.ndim != 3 or decoded.shape[2] != 3:
        raise _fail(path, "OpenCV cannot decode this 16-bit image")
    if decoded.dtype != np.uint16:
        raise _fail(path, f"unsupported sample format ({decoded.dtype} from a 16-bit header)")
    if sorted(decoded.shape[:2]) != sorted(image.size):
        raise _fail(
            path, f"decoded size {decoded.shape[:2]} disagrees with the header {image.size}"
        )
    rgb = np.ascontiguousarray(decoded[..., ::-1])
    if keep_16bit:
        return rgb
    # round(v / 257) exactly: no integer v sits on a .5 boundary, so (v + 128) // 257 agrees.
    return ((rgb.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _integer_range(array: np.ndarray) -> tuple[float, float]:
    """The default ``value_range`` of an array for :func:`write_image`."""
    if array.dtype == np.bool_:
        return 0.0, 1.0
    if np.issubdtype(array.dtype, np.floating):
        return 0.0, 1.0
    if array.dtype == np.uint8:
        return 0.0, 255.0
    if array.dtype == np.uint16:
        return 0.0, 65535.0
    raise ValueError(
        f"write_image: pass value_range for an array of dtype {array.dtype} "
        "(the default covers float [0, 1], bool, uint8 and uint16)"
    )


def write_image(
    path: str | os.PathLike[str],
    array: np.ndarray,
    *,
    bit_depth: int = 8,
    value_range: tuple[float, float] | None = None,
    quality: int = 95,
) -> Path:
    """Write an array as an image file (or a ``.npy``), atomically.

    ``.npy``: the array is saved as float32, values unchanged. Image files
    (``.png``, ``.jpg``/``.jpeg``, ``.tif``/``.tiff``, ``.bmp``, ``.webp``): values
    are mapped linearly from ``value_range = (low, high)`` to ``[0, 2**bit_depth - 1]``,
    clipped and rounded: ``round((v - low) / (high - low) * (2**bit_depth - 1))``.
    The default range is ``(0, 1)`` for float and bool arrays and the full range
    of the dtype for uint8 and uint16 (so uint8 written as 16-bit is ``v * 257``).
    The file is written to a temporary name in the same folder and renamed, so a
    reader never sees half a file.

    Args:
        path: The file; its extension chooses the format.
        array: ``(H, W)``, ``(H, W, 1)`` gray, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA.
        bit_depth: 8 or 16 (16 for ``.png`` and ``.tif`` only).
        value_range: ``(low, high)`` mapped to black and full white.
        quality: JPEG/WebP quality, 1 to 100.

    Returns:
        The path written.

    Raises:
        TypeError: If ``array`` is not a NumPy array.
        ValueError: For a bad shape, extension, bit depth, range or non-finite values.
    """
    path = Path(path)
    if not isinstance(array, np.ndarray):
        raise TypeError(f"write_image: array must be a numpy.ndarray; got {type(array).__name__}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(array, dtype=np.float32), allow_pickle=False)
        _atomic_write(path, buffer.getvalue())
        return path
    if bit_depth not in (8, 16):
        raise ValueError(f"write_image: bit_depth must be 8 or 16; got {bit_depth!r}")
    allowed = _WRITE_EXTENSIONS_8 if bit_depth == 8 else _WRITE_EXTENSIONS_16
    if suffix not in allowed:
        raise ValueError(
            f"write_image: extension {suffix or '(none)'!r} cannot hold {bit_depth}-bit images; "
            f"expected one of {[*allowed, '.npy']}"
        )
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ValueError(
            f"write_image: array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {array.shape}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"write_image: array has a zero dimension: {array.shape}")
    low, high = _integer_range(array) if value_range is None else map(float, value_range)
    if not (np.isfinite(low) and np.isfinite(high)) or high <= low:
        raise ValueError(
            f"write_image: value_range must be finite (low, high) with low < high; got {value_range}"
        )
    values = array.astype(np.float64)
    bad = np.count_nonzero(~np.isfinite(values))
    if bad:
        raise ValueError(
            f"write_image: array has {bad} NaN or infinite values; cannot write {str(path)!r}"
        )
    top = 2**bit_depth - 1
    scaled = np.clip(np.rint((values - low) / (high - low) * top), 0, top)
    pixels = scaled.astype(np.uint8 if bit_depth == 8 else np.uint16)
    if pixels.ndim == 3:
        pixels = cv2.cvtColor(
            pixels, cv2.COLOR_RGB2BGR if pixels.shape[2] == 3 else cv2.COLOR_RGBA2BGRA
        )
    params: list[int] = []
    if suffix in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    elif suffix == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, int(quality)]
    ok, encoded = cv2.imencode(suffix, pixels, params)
    if not ok:
        raise ValueError(
            f"write_image: OpenCV cannot encode a {pixels.shape} {pixels.dtype} image as {suffix}"
        )
    _atomic_write(path, encoded.tobytes())
    return path


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file next to ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


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
