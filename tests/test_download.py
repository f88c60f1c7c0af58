"""Downloads against a local HTTP server, and safe zip extraction."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import shutil
import socket
import stat
import struct
import threading
import time
import types
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from img2img_filters.data import (
    ChecksumError,
    DownloadError,
    TinyImageNet,
    UnsafeArchiveError,
    download_file,
    download_tiny_imagenet,
    extract_zip,
    is_tiny_imagenet_layout,
)
from img2img_filters.data import archive as archive_module
from img2img_filters.data import download as download_module
from img2img_filters.data import tinyimagenet as tinyimagenet_module
from img2img_filters.data.tinyimagenet import TINY_IMAGENET_MD5, TINY_IMAGENET_URL

PAYLOAD = bytes(range(256)) * 400  # 102,400 bytes
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()


# -- a local server ---------------------------------------------------------------------------------


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.log: list[tuple[str, str | None, int]] = []  # (path, Range header, status)
        self.drops: dict[str, int] = {}  # path -> connections still to drop midway
        self.failures: dict[str, int] = {}  # path -> 500 answers still to give
        self.lock = threading.Lock()

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that hang up early are part of the tests

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def requests(self, path: str) -> list[tuple[str | None, int]]:
        with self.lock:
            return [(r, s) for p, r, s in self.log if p == path]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _record(self, status: int) -> None:
        with self.server.lock:
            self.server.log.append((self.path, self.headers.get("Range"), status))

    def do_GET(self) -> None:
        server, path = self.server, self.path
        if path == "/slow":
            time.sleep(1.0)
        with server.lock:
            failing = server.failures.get(path, 0)
            if failing:
                server.failures[path] = failing - 1
            dropping = server.drops.get(path, 0)
            if dropping:
                server.drops[path] = dropping - 1
        if path.startswith("/status/"):
            code = int(path.rsplit("/", 1)[1])
            self._record(code)
            self.send_error(code)
            return
        if failing:
            self._record(500)
            self.send_error(500)
            return
        body = server.files.get(path.replace("/norange", ""))
        if body is None:
            self._record(404)
            self.send_error(404)
            return
        start = 0
        ranged = self.headers.get("Range")
        if ranged and not path.startswith("/norange") and not dropping:
            start = int(ranged.split("=")[1].split("-")[0])
            if start >= len(body):
                self._record(416)
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self._record(206)
        else:
            self.send_response(200)
            self._record(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if dropping:  # half the body, then the connection goes away
            self.wfile.write(body[start : start + (len(body) - start) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body[start:])


@pytest.fixture
def server() -> Iterator[_Server]:
    httpd = _Server()
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- download_file ----------------------------------------------------------------------------------


def test_download_and_idempotence(server: _Server, tmp_path: Path) -> None:
    server.files["/payload.bin"] = PAYLOAD
    dest = tmp_path / "payload.bin"
    assert download_file(f"{server.url}/payload.bin", dest, PAYLOAD_MD5) == dest
    assert dest.read_bytes() == PAYLOAD
    assert _leftovers(tmp_path) == ["payload.bin"]
    assert len(server.requests("/payload.bin")) == 1
    download_file(f"{server.url}/payload.bin", dest, PAYLOAD_MD5.upper())
    download_file(f"{server.url}/payload.bin", dest)
    assert len(server.requests("/payload.bin")) == 1  # verified file: not fetched again
    dest.write_bytes(b"stale")
    download_file(f"{server.url}/payload.bin", dest, PAYLOAD_MD5)
    assert dest.read_bytes() == PAYLOAD
    assert len(server.requests("/payload.bin")) == 2


def test_resume_with_range_after_a_dropped_connection(server: _Server, tmp_path: Path) -> None:
    server.files["/payload.bin"] = PAYLOAD
    server.drops["/payload.bin"] = 1
    dest = tmp_path / "payload.bin"
    download_file(f"{server.url}/payload.bin", dest, PAYLOAD_MD5, backoff=0, chunk_size=4096)
    assert dest.read_bytes() == PAYLOAD
    first, second = server.requests("/payload.bin")
    assert first == (None, 200)
    assert second[1] == 206 and second[0] is not None
    resumed_from = int(second[0].split("=")[1].rstrip("-"))
    assert 0 < resumed_from < len(PAYLOAD)
    assert _leftovers(tmp_path) == ["payload.bin"]


def test_restart_when_the_server_ignores_range(server: _Server, tmp_path: Path) -> None:
    server.files["/payload.bin"] = PAYLOAD
    server.drops["/norange/payload.bin"] = 1
    dest = tmp_path / "payload.bin"
    download_file(
        f"{server.url}/norange/payload.bin", dest, PAYLOAD_MD5, backoff=0, chunk_size=4096
    )
    assert dest.read_bytes() == PAYLOAD
    statuses = [status for _, status in server.requests("/norange/payload.bin")]
    assert statuses == [200, 200]
    ranges = [r for r, _ in server.requests("/norange/payload.bin")]
    assert ranges[0] is None and ranges[1] is not None  # it asked, the server said no


def test_resume_from_a_previous_partial_file(server: _Server, tmp_path: Path) -> None:
    server.files["/payload.bin"] = PAYLOAD
    dest = tmp_path / "payload.bin"
    (tmp_path / "payload.bin.part").write_bytes(PAYLOAD[:1000])
    download_file(f"{server.url}/payload.bin", dest, PAYLOAD_MD5)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests("/payload.bin") == [("bytes=1000-", 206)]


def test_http_404_is_a_clear_error(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404") as excinfo:
        download_file(f"{server.url}/missing.zip", tmp_path / "missing.zip", backoff=0)
    assert "missing.zip" in str(excinfo.value)
    assert len(server.requests("/missing.zip")) == 1  # not retried
    assert _leftovers(tmp_path) == []


def test_http_500_is_retried_then_reported(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 500") as excinfo:
        download_file(f"{server.url}/status/500", tmp_path / "x.bin", retries=2, backoff=0)
    assert "3 attempts" in str(excinfo.value)
    assert len(server.requests("/status/500")) == 3
    assert not (tmp_path / "x.bin").exists()


def test_transient_500_then_success(server: _Server, tmp_path: Path) -> None:
    server.files["/payload.bin"] = PAYLOAD
    server.failures["/payload.bin"] = 2
    dest = tmp_path / "payload.bin"
    download_file(f"{server.url}/payload.bin", dest, PAYLOAD_MD5, retries=3, backoff=0)
    assert dest.read_bytes() == PAYLOAD


def test_checksum_mismatch_removes_the_file(server: _Server, tmp_path: Path) -> None:
    server.files["/payload.bin"] = PAYLOAD[::-1]  # the wrong bytes
    dest = tmp_path / "payload.bin"
    with pytest.raises(ChecksumError, match="checksum mismatch") as excinfo:
        download_file(f"{server.url}/payload.bin", dest, PAYLOAD_MD5)
    assert PAYLOAD_MD5 in str(excinfo.value) and "removed" in str(excinfo.value)
    assert _leftovers(tmp_path) == []


def test_connection_refused(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DownloadError, match="2 attempts"):
        download_file(f"http://127.0.0.1:{port}/x.zip", tmp_path / "x.zip", retries=1, backoff=0)
    assert _leftovers(tmp_path) == []


def test_timeout_is_retried_and_reported(server: _Server, tmp_path: Path) -> None:
    server.files["/slow"] = PAYLOAD
    with pytest.raises(DownloadError, match="1 attempts"):
        download_file(f"{server.url}/slow", tmp_path / "slow.bin", retries=0, timeout=0.2)
    assert not (tmp_path / "slow.bin").exists()


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="http"):
        download_file("ftp://example.org/x.zip", tmp_path / "x.zip")
    with pytest.raises(ValueError, match="retries"):
        download_file("http://127.0.0.1/x.zip", tmp_path / "x.zip", retries=-1)


def test_official_facts() -> None:
    assert TINY_IMAGENET_URL == "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
    assert TINY_IMAGENET_MD5 == "90528d7ca1a48142e341f4ef8d21d0de"
    assert TinyImageNet.url == TINY_IMAGENET_URL and TinyImageNet.md5 == TINY_IMAGENET_MD5


# -- Tiny ImageNet end to end -----------------------------------------------------------------------


def _small_tiny_imagenet_zip(mini_root: Path, work: Path) -> bytes:
    """A few files of the mini set, in the official archive's layout, zipped."""
    top = work / "tiny-imagenet-200"
    wnids = (mini_root / "wnids.txt").read_text().split()[:2]
    (top / "train").mkdir(parents=True)
    (top / "wnids.txt").write_text("\n".join(wnids) + "\n")
    shutil.copy(mini_root / "words.txt", top / "words.txt")
    for wnid in wnids:
        images = sorted((mini_root / "train" / wnid / "images").iterdir())[:3]
        (top / "train" / wnid / "images").mkdir(parents=True)
        for image in images:
            shutil.copy(image, top / "train" / wnid / "images" / image.name)
        shutil.copy(mini_root / "train" / wnid / f"{wnid}_boxes.txt", top / "train" / wnid)
    (top / "val" / "images").mkdir(parents=True)
    lines = [
        line
        for line in (mini_root / "val" / "val_annotations.txt").read_text().splitlines()
        if line.split("\t")[1] in wnids
    ][:4]
    (top / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    for line in lines:
        name = line.split("\t")[0]
        shutil.copy(mini_root / "val" / "images" / name, top / "val" / "images" / name)
    (top / "test" / "images").mkdir(parents=True)
    for image in sorted((mini_root / "test" / "images").iterdir())[:2]:
        shutil.copy(image, top / "test" / "images" / image.name)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(top.rglob("*")):
            archive.write(path, path.relative_to(work).as_posix())
    return buffer.getvalue()


@pytest.mark.parametrize("name", ["tiny-imagenet-200", "renamed"])
def test_download_tiny_imagenet(
    server: _Server, mini_root: Path, tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(download_module, "time", types.SimpleNamespace(sleep=lambda seconds: None))
    archive = _small_tiny_imagenet_zip(mini_root, tmp_path / "build")
    server.files["/tiny-imagenet-200.zip"] = archive
    server.drops["/tiny-imagenet-200.zip"] = 1
    data = tmp_path / "data"
    root = data / name
    url = f"{server.url}/tiny-imagenet-200.zip"
    md5 = hashlib.md5(archive).hexdigest()
    with pytest.raises(FileNotFoundError, match="img2img data download tiny-imagenet"):
        TinyImageNet(root)
    result = download_tiny_imagenet(root, url=url, md5=md5, progress=False)
    assert result == root and is_tiny_imagenet_layout(root)
    assert _leftovers(data) == [name]  # archive removed, no staging folders
    train, val, test = (TinyImageNet(root, split) for split in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (6, 4, 2)
    assert (test.labels == -1).all()
    requests = len(server.requests("/tiny-imagenet-200.zip"))
    download_tiny_imagenet(root, url=url, md5=md5, progress=False)  # already there: no request
    assert len(server.requests("/tiny-imagenet-200.zip")) == requests


def test_tiny_imagenet_download_argument(
    server: _Server, mini_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = _small_tiny_imagenet_zip(mini_root, tmp_path / "build")
    server.files["/tiny-imagenet-200.zip"] = archive
    local = functools.partial(
        download_tiny_imagenet,
        url=f"{server.url}/tiny-imagenet-200.zip",
        md5=hashlib.md5(archive).hexdigest(),
        progress=False,
    )
    monkeypatch.setattr(tinyimagenet_module, "download_tiny_imagenet", local)
    root = tmp_path / "data" / "tiny-imagenet-200"
    assert len(TinyImageNet(root, "train", download=True)) == 6
    assert len(TinyImageNet(root, "val", download=True)) == 4


def test_download_tiny_imagenet_refuses_a_partial_folder(tmp_path: Path) -> None:
    root = tmp_path / "tiny-imagenet-200"
    (root / "train").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="remove it"):
        download_tiny_imagenet(root, url="http://127.0.0.1:1/x.zip", progress=False)


# -- extract_zip ------------------------------------------------------------------------------------


def _zip(
    tmp_path: Path, members: list[tuple[zipfile.ZipInfo | str, bytes]], name: str = "a.zip"
) -> Path:
    path = tmp_path / name
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for info, data in members:
            archive.writestr(info, data)
    return path


def test_extract_zip(tmp_path: Path) -> None:
    archive = _zip(
        tmp_path, [("top/a.txt", b"alpha"), ("top/sub/b.txt", b"beta"), ("top/empty/", b"")]
    )
    dest = tmp_path / "out"
    assert extract_zip(archive, dest) == dest
    assert (dest / "top" / "a.txt").read_bytes() == b"alpha"
    assert (dest / "top" / "sub" / "b.txt").read_bytes() == b"beta"
    assert (dest / "top" / "empty").is_dir()
    assert _leftovers(tmp_path) == ["a.zip", "out"]
    with pytest.raises(FileExistsError, match="already exists"):
        extract_zip(archive, dest)
    other = _zip(tmp_path, [("second/c.txt", b"gamma")], name="b.zip")
    extract_zip(other, dest)  # an existing folder receives new top-level entries
    assert _leftovers(dest) == ["second", "top"]


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        ("../evil.txt", "'..'"),
        ("top/../../evil.txt", "'..'"),
        ("top\\..\\..\\evil.txt", "'..'"),
        ("/abs/evil.txt", "absolute"),
        ("C:/evil.txt", "absolute"),
        ("c:evil.txt", "absolute"),
    ],
)
def test_extract_refuses_escaping_paths(tmp_path: Path, member: str, reason: str) -> None:
    archive = _zip(tmp_path, [("good.txt", b"fine"), (zipfile.ZipInfo(member), b"evil")])
    dest = tmp_path / "deep" / "out"
    with pytest.raises(UnsafeArchiveError, match=reason):
        extract_zip(archive, dest)
    assert not dest.exists()
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "deep" / "evil.txt").exists()
    assert not (tmp_path / "deep").exists()


@pytest.mark.parametrize("target", [b"../../outside", b"/etc/passwd", b"inside.txt"])
def test_extract_refuses_symlinks(tmp_path: Path, target: bytes) -> None:
    link = zipfile.ZipInfo("top/link")
    link.create_system = 3  # Unix
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = _zip(tmp_path, [("top/inside.txt", b"x"), (link, target)])
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        extract_zip(archive, tmp_path / "out")
    assert _leftovers(tmp_path) == ["a.zip"]


def test_extract_stops_a_zip_bomb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = _zip(tmp_path, [("zeros.bin", b"\0" * 4_000_000)])
    assert archive.stat().st_size < 20_000  # highly compressible
    with pytest.raises(UnsafeArchiveError, match="4,000,000 bytes"):
        extract_zip(archive, tmp_path / "out", max_total_bytes=1_000_000)
    monkeypatch.setenv("IMG2IMG_MAX_EXTRACT_BYTES", "1000000")
    with pytest.raises(UnsafeArchiveError, match="IMG2IMG_MAX_EXTRACT_BYTES"):
        extract_zip(archive, tmp_path / "out")
    assert _leftovers(tmp_path) == ["a.zip"]
    assert extract_zip(archive, tmp_path / "out", max_total_bytes=4_000_000).is_dir()
    monkeypatch.delenv("IMG2IMG_MAX_EXTRACT_BYTES")
    assert download_module.max_extract_bytes() == 2 * 1024**3


def _patch_declared_sizes(path: Path, size: int) -> None:
    """Rewrite every uncompressed size in the local and central headers (a lying archive)."""
    data = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = 0
        while (start := data.find(signature, start)) != -1:
            data[start + offset : start + offset + 4] = struct.pack("<I", size)
            start += 4
    path.write_bytes(bytes(data))


def test_extract_does_not_trust_declared_sizes(tmp_path: Path) -> None:
    archive = _zip(tmp_path, [("zeros.bin", b"\0" * 4_000_000)])
    _patch_declared_sizes(archive, 10)
    with pytest.raises(ValueError):
        extract_zip(archive, tmp_path / "out", max_total_bytes=1_000)
    assert _leftovers(tmp_path) == ["a.zip"]


def test_written_bytes_are_counted() -> None:
    source, target = io.BytesIO(b"\0" * 5000), io.BytesIO()
    with pytest.raises(UnsafeArchiveError, match="extraction limit"):
        archive_module._copy_limited(source, target, 1000, "member")
    assert archive_module._copy_limited(io.BytesIO(b"abc"), io.BytesIO(), 3, "member") == 3


def test_a_failure_midway_leaves_nothing(tmp_path: Path) -> None:
    archive = _zip(tmp_path, [("top/a.bin", os.urandom(50_000)), ("top/b.bin", os.urandom(50_000))])
    data = bytearray(archive.read_bytes())
    second = data.find(b"PK\x03\x04", 10)
    data[second + 200 : second + 260] = b"\xff" * 60  # corrupt the second member's data
    archive.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt"):
        extract_zip(archive, tmp_path / "out")
    assert _leftovers(tmp_path) == ["a.zip"]


def test_extract_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        extract_zip(tmp_path / "absent.zip", tmp_path / "out")
    (tmp_path / "text.zip").write_text("not a zip")
    with pytest.raises(ValueError, match="not a valid zip"):
        extract_zip(tmp_path / "text.zip", tmp_path / "out")
    with pytest.raises(ValueError, match="max_total_bytes"):
        extract_zip(tmp_path / "text.zip", tmp_path / "out", max_total_bytes=0)
