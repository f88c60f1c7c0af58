"""Downloading files (resumable, checksummed) and extracting zip archives safely.

Only the standard library's ``urllib`` is used. A download streams into
``<dest>.part``, resumes with an HTTP ``Range`` request after a dropped
connection, and is renamed to ``dest`` only once its MD5 checks out. An archive
is extracted into a temporary folder next to its destination and renamed at the
end, after every member has been checked: no absolute paths, no ``..``, no
links, and no more than :data:`MAX_EXTRACT_BYTES` in all.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import stat
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from img2img_filters import __version__

__all__ = [
    "MAX_ARCHIVE_MEMBERS",
    "MAX_EXTRACT_BYTES",
    "ChecksumError",
    "DownloadError",
    "UnsafeArchiveError",
    "download_file",
    "extract_zip",
    "file_md5",
    "max_extract_bytes",
]

#: The most bytes :func:`extract_zip` writes (2 GiB); ``$IMG2IMG_MAX_EXTRACT_BYTES`` overrides it.
MAX_EXTRACT_BYTES = 2 * 1024**3
#: The most members (files and folders) :func:`extract_zip` accepts in one archive. Tiny
#: ImageNet holds about 120,000; a small archive of empty members must not fill the disk's
#: inodes or take minutes of file creation.
MAX_ARCHIVE_MEMBERS = 200_000

_CHUNK = 1 << 20
_RETRYABLE_STATUS = (408, 429, 500, 502, 503, 504)


class DownloadError(RuntimeError):
    """A download that failed: an HTTP error, or a connection that kept failing."""


class ChecksumError(DownloadError):
    """A downloaded file whose MD5 is not the expected one (the file has been removed)."""


class UnsafeArchiveError(ValueError):
    """An archive with a dangerous member (absolute path, ``..``, link) or too much data."""


def file_md5(path: str | os.PathLike[str], chunk_size: int = _CHUNK) -> str:
    """The MD5 of a file, as lowercase hex."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as file:
        while chunk := file.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(
    url: str,
    dest: str | os.PathLike[str],
    md5: str | None = None,
    *,
    chunk_size: int = _CHUNK,
    retries: int = 3,
    timeout: float = 30.0,
    backoff: float = 1.0,
    progress: bool = False,
) -> Path:
    """Download ``url`` to ``dest``, resuming after dropped connections, checking the MD5.

    The data goes to ``dest + ".part"``; after a dropped connection the download
    resumes with a ``Range`` request when the server answers ``206 Partial
    Content``, and restarts from zero when it does not. ``dest`` appears only
    after the whole file has arrived and its MD5 matches. A ``dest`` that already
    exists (and matches ``md5`` when given) is not downloaded again.

    Args:
        url: ``http://`` or ``https://`` address.
        dest: The file to create.
        md5: The expected MD5 (hex), or ``None`` to skip the check.
        chunk_size: Bytes read at a time.
        retries: How many times a dropped connection, a timeout or an HTTP
            408/429/5xx answer is retried before giving up.
        timeout: Seconds to wait for the server on each read.
        backoff: Seconds before the first retry, doubled for each next one.
        progress: Show a progress bar (tqdm) on stderr.

    Returns:
        ``dest``.

    Raises:
        DownloadError: For an HTTP error (with its status) or a connection that
            failed ``retries + 1`` times.
        ChecksumError: If the MD5 does not match; the downloaded file is removed.
        ValueError: For a URL that is not http(s) or a bad ``retries``/``chunk_size``.
    """
    dest = Path(dest)
    if not re.match(r"^https?://", url, flags=re.IGNORECASE):
        raise ValueError(f"url must start with http:// or https://; got {url!r}")
    if retries < 0:
        raise ValueError(f"retries must be >= 0; got {retries}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive; got {chunk_size}")
    md5 = md5.lower() if md5 else None
    if dest.is_file() and (md5 is None or file_md5(dest) == md5):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if md5 is not None and part.is_file() and file_md5(part) == md5:  # complete, not yet renamed
        os.replace(part, dest)
        return dest
    failures = 0
    while True:
        try:
            _fetch(url, part, chunk_size=chunk_size, timeout=timeout, progress=progress)
            break
        except _RetryableError as error:
            failures += 1
            if failures > retries:
                kept = (
                    f"; the partial file {str(part)!r} is kept to resume" if part.is_file() else ""
                )
                raise DownloadError(
                    f"download of {url} failed after {failures} attempts: {error}{kept}"
                ) from None
            time.sleep(backoff * 2 ** (failures - 1))
    if md5 is not None:
        actual = file_md5(part)
        if actual != md5:
            part.unlink(missing_ok=True)
            raise ChecksumError(
                f"checksum mismatch for {url}: expected MD5 {md5}, got {actual}; "
                f"the downloaded file was removed, try again"
            )
    os.replace(part, dest)
    return dest


class _RetryableError(Exception):
    """A failure worth retrying: a dropped connection, a timeout, a transient HTTP status."""


def _fetch(url: str, part: Path, *, chunk_size: int, timeout: float, progress: bool) -> None:
    """One attempt: continue ``part`` from its current size (or restart), up to the end."""
    offset = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": f"img2img/{__version__}", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # the scheme is checked above
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # the range is past the end: the part file is bad
            part.unlink(missing_ok=True)
            raise _RetryableError("the server refused to resume (HTTP 416); restarting") from None
        message = f"HTTP {error.code} {error.reason} for {url}"
        if error.code in _RETRYABLE_STATUS:
            raise _RetryableError(message) from None
        raise DownloadError(f"download failed: {message}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        raise _RetryableError(f"cannot connect to {url} ({reason})") from None
    with response:
        resume = offset > 0 and response.status == 206 and _range_start(response) == offset
        if response.status == 206 and not resume:  # a range we did not ask for
            part.unlink(missing_ok=True)
            raise _RetryableError("the server answered with an unexpected range; restarting")
        mode = "ab" if resume else "wb"
        start = offset if resume else 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length and length.isdigit() else None
        with open(part, mode) as file:
            received = _copy(response, file, chunk_size, start, total, progress, url)
    if total is not None and start + received < total:
        raise _RetryableError(f"connection closed after {start + received} of {total} bytes")


def _range_start(response: http.client.HTTPResponse) -> int | None:
    """The first byte of a ``Content-Range: bytes a-b/n`` answer."""
    match = re.match(r"bytes\s+(\d+)-", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _copy(
    response: BinaryIO,
    file: BinaryIO,
    chunk_size: int,
    start: int,
    total: int | None,
    progress: bool,
    url: str,
) -> int:
    """Stream the response body into ``file``; a dropped connection becomes a retryable error."""
    bar = None
    if progress:
        bar = tqdm(
            total=total,
            initial=start,
            unit="B",
            unit_scale=True,
            desc=Path(url).name,
            disable=None,  # only on a terminal
        )
    received = 0
    try:
        while True:
            try:
                chunk = response.read(chunk_size)
            except (http.client.HTTPException, OSError) as error:
                file.flush()
                raise _RetryableError(
                    f"connection dropped after {start + received} bytes ({error})"
                ) from None
            if not chunk:
                return received
            file.write(chunk)
            received += len(chunk)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()


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
