"""Opening untrusted image files: the errors, regular files only, and what a refused file is.

The helpers :mod:`img2img_filters.imageio` uses before and after a decoder sees a file:
:func:`open_regular_file` opens only a non-empty regular file (a FIFO, a device, a
folder or a symbolic link loop is refused, unopened, with its reason), and
:func:`png_chunk_problem` and :func:`other_format` say why a file was not decoded.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "ImageReadError",
    "MissingImageError",
    "fail",
    "open_regular_file",
    "other_format",
    "png_chunk_problem",
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ImageReadError(ValueError):
    """An image file that cannot be read: missing, empty, truncated, too large or not an image."""


class MissingImageError(FileNotFoundError, ImageReadError):
    """A missing image file: both a :class:`FileNotFoundError` and an :class:`ImageReadError`."""


def fail(path: Path, problem: str) -> ImageReadError:
    """An :class:`ImageReadError` whose one-line message names ``path`` and the problem."""
    problem = " ".join(str(problem).split())  # one line, whatever the library said
    return ImageReadError(f"cannot read image {str(path)!r}: {problem}")


_FILE_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _not_regular(path: Path, mode: int) -> ImageReadError:
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "of an unknown kind")
    return fail(path, f"not a regular file: {kind}")


def open_regular_file(path: Path) -> BinaryIO:
    """Open ``path`` for reading if it is a non-empty regular file (symbolic links followed).

    Anything else is refused without being opened (a FIFO would block, a device
    never ends), with the reason: missing, a symbolic link loop or a broken link,
    a folder, FIFO, device or socket, unreadable, empty.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            raise MissingImageError(
                f"cannot read image {str(path)!r}: file not found (a symbolic link to "
                f"{os.readlink(path)!r}, which does not exist)"
            ) from None
        raise MissingImageError(f"cannot read image {str(path)!r}: file not found") from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise fail(path, "a symlink loop (symbolic links that never reach a file)") from None
        raise fail(path, f"the file cannot be opened ({error.strerror or error})") from None
    if not stat.S_ISREG(mode):
        raise _not_regular(path, mode)
    try:  # O_NONBLOCK: a file swapped for a FIFO since the check must not block the open
        handle = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as error:
        raise fail(path, f"the file cannot be opened ({error.strerror or error})") from None
    file = open(handle, "rb")  # noqa: SIM115  (the caller closes it)
    info = os.fstat(handle)
    if not stat.S_ISREG(info.st_mode):
        file.close()
        raise _not_regular(path, info.st_mode)
    if info.st_size == 0:
        file.close()
        raise fail(path, "the file is empty (0 bytes)")
    return file


def other_format(prefix: bytes) -> str | None:
    """The name of a format outside :data:`READ_FORMATS` whose signature ``prefix`` has."""
    if prefix.startswith((b"%!PS", b"\xc5\xd0\xd3\xc6")):
        return "PostScript/EPS"
    if prefix.startswith(b"%PDF"):
        return "PDF"
    if prefix.lstrip().startswith((b"<svg", b"<?xml")):
        return "SVG/XML"
    return None


def png_chunk_problem(file: BinaryIO) -> str | None:
    """The first bad PNG chunk (``"corrupt: ..."`` or ``"truncated: ..."``); ``None`` if sound."""
    file.seek(len(PNG_SIGNATURE))
    while True:
        offset = file.tell()
        head = file.read(8)
        if len(head) < 8:
            return f"truncated: the file ends at byte {offset + len(head)} without an IEND chunk"
        length, kind = struct.unpack(">I4s", head)
        name = repr(kind.decode("latin-1")) if kind.isalpha() else kind.hex()
        if length > 2**31 - 1:
            return f"corrupt: chunk {name} at byte {offset} claims {length:,} bytes"
        crc, remaining = zlib.crc32(kind), length
        while remaining:
            piece = file.read(min(remaining, 2**20))
            if not piece:
                return f"truncated: the file ends inside chunk {name} (at byte {offset})"
            crc, remaining = zlib.crc32(piece, crc), remaining - len(piece)
        stored = file.read(4)
        if len(stored) < 4:
            return f"truncated: the file ends inside chunk {name} (at byte {offset})"
        if struct.unpack(">I", stored)[0] != crc:
            role = "ancillary" if kind[0] & 0x20 else "critical"
            return f"corrupt: CRC mismatch in chunk {name} ({role}, at byte {offset})"
        if kind == b"IEND":
            return None
