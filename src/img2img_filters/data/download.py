"""Downloading files, resumable and checksummed; zip extraction is :mod:`img2img_filters.data.archive`.

Only the standard library's ``urllib`` is used. A download streams into
``<dest>.part``, resumes with an HTTP ``Range`` request after a dropped
connection, and is renamed to ``dest`` only once its MD5 checks out. The
archive names (:func:`extract_zip`, :class:`UnsafeArchiveError`, the limits) are
re-exported here.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from img2img_filters import __version__
from img2img_filters.data.archive import (
    MAX_ARCHIVE_MEMBERS,
    MAX_EXTRACT_BYTES,
    UnsafeArchiveError,
    extract_zip,
    max_extract_bytes,
)

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

_CHUNK = 1 << 20
_RETRYABLE_STATUS = (408, 429, 500, 502, 503, 504)


class DownloadError(RuntimeError):
    """A download that failed: an HTTP error, or a connection that kept failing."""


class ChecksumError(DownloadError):
    """A downloaded file whose MD5 is not the expected one (the file has been removed)."""


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
