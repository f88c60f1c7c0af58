"""Extracting zip archives safely.

An archive is extracted into a temporary folder next to its destination and
renamed at the end, after every member has been checked: no absolute paths, no
``..``, no links, and no more than :data:`MAX_EXTRACT_BYTES` in all.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "MAX_ARCHIVE_MEMBERS",
    "MAX_EXTRACT_BYTES",
    "UnsafeArchiveError",
    "extract_zip",
    "max_extract_bytes",
]

#: The most bytes :func:`extract_zip` writes (2 GiB); ``$IMG2IMG_MAX_EXTRACT_BYTES`` overrides it.
MAX_EXTRACT_BYTES = 2 * 1024**3
#: The most members (files and folders) :func:`extract_zip` accepts in one archive. Tiny
#: ImageNet holds about 120,000; a small archive of empty members must not fill the disk's
#: inodes or take minutes of file creation.
MAX_ARCHIVE_MEMBERS = 200_000

_CHUNK = 1 << 20


class UnsafeArchiveError(ValueError):
    """An archive with a dangerous member (absolute path, ``..``, link) or too much data."""


def max_extract_bytes(max_total_bytes: int | None = None) -> int:
    """The extraction limit: the argument, else ``$IMG2IMG_MAX_EXTRACT_BYTES``, else 2 GiB."""
    if max_total_bytes is None:
        text = os.environ.get("IMG2IMG_MAX_EXTRACT_BYTES", "").strip()
        if not text:
            return MAX_EXTRACT_BYTES
        try:
            max_total_bytes = int(text.replace("_", ""))
        except ValueError:
            raise ValueError(
                f"environment variable IMG2IMG_MAX_EXTRACT_BYTES must be a positive integer; got {text!r}"
            ) from None
    if isinstance(max_total_bytes, bool) or not isinstance(max_total_bytes, int):
        raise TypeError(f"max_total_bytes must be an int; got {type(max_total_bytes).__name__}")
    if max_total_bytes <= 0:
        raise ValueError(f"max_total_bytes must be positive; got {max_total_bytes}")
    return max_total_bytes


def _member_parts(archive: Path, info: zipfile.ZipInfo) -> tuple[str, ...]:
    """The safe relative path of a member, or :class:`UnsafeArchiveError`."""
    name = info.filename
    where = f"archive {str(archive)!r}: member {name!r}"
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise UnsafeArchiveError(f"{where} is a symbolic link; links are refused")
    if mode and stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise UnsafeArchiveError(f"{where} is not a regular file or folder (mode {oct(mode)})")
    normalised = name.replace("\\", "/")
    if normalised.startswith("/") or re.match(r"^[A-Za-z]:", normalised):
        raise UnsafeArchiveError(f"{where} has an absolute path")
    parts = tuple(part for part in normalised.split("/") if part not in ("", "."))
    if ".." in parts:
        raise UnsafeArchiveError(f"{where} has a '..' component")
    if not parts:
        raise UnsafeArchiveError(f"{where} has an empty path")
    if any("\0" in part or (os.name == "nt" and ":" in part) for part in parts):
        raise UnsafeArchiveError(f"{where} has a forbidden character in its path")
    return parts


def _copy_limited(source: BinaryIO, target: BinaryIO, budget: int, what: str) -> int:
    """Copy ``source`` to ``target`` and return the bytes written; more than ``budget`` raises."""
    written = 0
    while chunk := source.read(_CHUNK):
        written += len(chunk)
        if written > budget:
            raise UnsafeArchiveError(f"{what}: more data than the extraction limit allows")
        target.write(chunk)
    return written


def extract_zip(
    archive: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    max_total_bytes: int | None = None,
) -> Path:
    """Extract a zip archive into ``dest``, safely and all at once.

    An archive of more than :data:`MAX_ARCHIVE_MEMBERS` members is refused.
    Every member is checked before anything is written: absolute paths, drive
    letters, ``..`` components, symbolic links and special files are refused, and
    so is an archive whose declared uncompressed sizes add up to more than
    ``max_total_bytes``. The bytes actually written are counted too (declared
    sizes can lie). Members go into a temporary folder inside ``dest``'s parent,
    which is renamed to ``dest`` at the end (or whose top-level entries are moved
    into an existing ``dest``), so a failure leaves nothing half-extracted.

    Args:
        archive: The zip file.
        dest: The folder that receives the members (created if needed).
        max_total_bytes: The most bytes to write (default :data:`MAX_EXTRACT_BYTES`
            = 2 GiB, or ``$IMG2IMG_MAX_EXTRACT_BYTES``).

    Returns:
        ``dest``.

    Raises:
        FileNotFoundError: If the archive does not exist.
        UnsafeArchiveError: For a dangerous member or too much data.
        FileExistsError: If a top-level entry of the archive already exists in ``dest``.
        ValueError: If the file is not a valid zip archive.
    """
    archive, dest = Path(archive), Path(dest)
    limit = max_extract_bytes(max_total_bytes)
    if not archive.is_file():
        raise FileNotFoundError(f"archive {str(archive)!r} not found")
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as error:
        raise ValueError(f"archive {str(archive)!r} is not a valid zip file ({error})") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_ARCHIVE_MEMBERS:
            raise UnsafeArchiveError(
                f"archive {str(archive)!r} holds {len(infos):,} members, more than the limit "
                f"of {MAX_ARCHIVE_MEMBERS:,}"
            )
        members = [(info, _member_parts(archive, info)) for info in infos]
        declared = sum(info.file_size for info, _ in members)
        if declared > limit:
            raise UnsafeArchiveError(
                f"archive {str(archive)!r} would expand to {declared:,} bytes, more than the limit of "
                f"{limit:,} (max_total_bytes or IMG2IMG_MAX_EXTRACT_BYTES raise it)"
            )
        tops = sorted({parts[0] for _, parts in members})
        if dest.exists():
            clashes = [top for top in tops if (dest / top).exists() or (dest / top).is_symlink()]
            if clashes:
                raise FileExistsError(
                    f"cannot extract {str(archive)!r}: {str(dest / clashes[0])!r} already exists; "
                    "remove it first"
                )
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.extract-", dir=dest.parent))
        try:
            _extract_members(zf, archive, members, staging, limit)
            _move_into_place(staging, dest, tops)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return dest


def _extract_members(
    zf: zipfile.ZipFile,
    archive: Path,
    members: list[tuple[zipfile.ZipInfo, tuple[str, ...]]],
    staging: Path,
    limit: int,
) -> None:
    """Write every checked member under ``staging``, counting the bytes against ``limit``."""
    written = 0
    root = staging.resolve()
    for info, parts in members:
        target = staging.joinpath(*parts)
        if not target.resolve().is_relative_to(root):  # belt and braces after the name checks
            raise UnsafeArchiveError(
                f"archive {str(archive)!r}: member {info.filename!r} escapes the folder"
            )
        what = f"archive {str(archive)!r} (member {info.filename!r})"
        try:
            (target if info.is_dir() else target.parent).mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):  # a file member where a folder must go
            raise UnsafeArchiveError(
                f"{what} needs a folder where another member is a file"
            ) from None
        if info.is_dir():
            continue
        try:
            with zf.open(info) as source, open(target, "xb") as output:
                written += _copy_limited(source, output, limit - written, what)
        except zipfile.BadZipFile as error:
            raise ValueError(f"{what} is corrupt ({error})") from None
        except FileExistsError:
            raise UnsafeArchiveError(f"{what} appears twice in the archive") from None


def _move_into_place(staging: Path, dest: Path, tops: list[str]) -> None:
    """Rename ``staging`` to ``dest``, or move its top-level entries into an existing ``dest``."""
    if not dest.exists():
        os.replace(staging, dest)
        return
    for top in tops:
        os.replace(staging / top, dest / top)
    staging.rmdir()
