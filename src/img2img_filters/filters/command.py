"""An external program as the teacher: ``cmd:PROGRAM ARGS... {in} ... {out}``.

The program runs once per photo, without a shell (the arguments are split as a
POSIX shell would, by :func:`shlex.split`). ``{in}`` becomes a lossless PNG of
the photo in a private temporary folder and ``{out}`` the file the program must
write: a PNG, or by its extension ``{out.tif}`` (8/16-bit or float32 TIFF) or
``{out.npy}`` (see :func:`img2img_filters.data.targets.read_target`). Photos run in
parallel (a pool of threads, each waiting on its own process), each under a
timeout; outputs are cached on disk under ``cache_dir()/teacher`` by a hash of
the command text and the photo's bytes, so a photo is never sent to the same
command twice. A filter built with ``allow_run=False`` (a spec read from a
checkpoint or run folder) only reads that cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from img2img_filters.data.targets import check_target, read_target
from img2img_filters.fileio import atomic_write_bytes
from img2img_filters.filters.teacher import TeacherFilter, TeacherNotRunError, teacher_cache_dir

__all__ = ["COMMAND_PREFIX", "FIRST_PHOTOS", "CommandFilter"]

COMMAND_PREFIX = "cmd:"
_OUT_EXTENSIONS = {"{out}": ".png", "{out.png}": ".png", "{out.tif}": ".tif"}
_OUT_EXTENSIONS.update({"{out.tiff}": ".tiff", "{out.npy}": ".npy"})
_CACHE_VERSION = b"img2img-teacher-1"
_STDERR_TAIL = 300
#: Photos tried before the rest: more than half of them failing stops the work.
FIRST_PHOTOS = 16


class CommandFilter(TeacherFilter):
    """An external program as the teacher (see the module's description for the spec).

    Args:
        spec: ``"cmd:PROGRAM ARGS..."`` with ``{in}`` and ``{out}`` (or ``{out.tif}``,
            ``{out.tiff}``, ``{out.npy}``, ``{out.png}``) among the arguments.
        allow_run: Whether the program may run. ``False`` (a spec read from a
            checkpoint or run folder) only reads outputs from the cache.
        timeout: Seconds each photo may take.
        workers: Programs run at once (default: the CPU count).
        radius: The support assumed for ``arch=auto``.

    Raises:
        ValueError: If ``{in}`` or ``{out}`` is missing or the command is empty.
        FileNotFoundError: If the program does not exist (when ``allow_run``).
    """

    def __init__(
        self,
        spec: str,
        *,
        allow_run: bool = True,
        timeout: float = 60.0,
        workers: int | None = None,
        radius: int = 3,
    ) -> None:
        text = spec.strip()
        if not text.startswith(COMMAND_PREFIX):
            raise ValueError(f"a command filter's spec starts with 'cmd:'; got {spec!r}")
        super().__init__(text, radius=radius)
        self.command = text[len(COMMAND_PREFIX) :].strip()
        try:
            self.args = shlex.split(self.command)
        except ValueError as error:
            raise ValueError(f"filter {text!r}: cannot split the command ({error})") from None
        if not self.args:
            raise ValueError(
                f"filter {text!r}: no program given; write 'cmd:PROGRAM ARGS... {{in}} ... {{out}}'"
            )
        outs = {token for arg in self.args for token in _OUT_EXTENSIONS if token in arg}
        if not any("{in}" in arg for arg in self.args):
            raise ValueError(
                f"filter {text!r}: the command has no {{in}}; put {{in}} where the program reads "
                "the photo (a PNG), e.g. 'cmd:convert {in} -blur 0x2 {out}'"
            )
        if not outs:
            raise ValueError(
                f"filter {text!r}: the command has no {{out}}; put {{out}} (a PNG) or {{out.tif}}/"
                "{out.npy} where the program writes its result, e.g. 'cmd:convert {in} -blur 0x2 {out}'"
            )
        if len({_OUT_EXTENSIONS[token] for token in outs}) > 1:
            raise ValueError(f"filter {text!r}: use one output file type; got {sorted(outs)}")
        self.out_suffix = _OUT_EXTENSIONS[outs.pop()]
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds; got {timeout!r}")
        self.timeout = float(timeout)
        self.workers = max(1, int(workers or os.cpu_count() or 1))
        self.allow_run = bool(allow_run)
        if self.allow_run:
            self.program = _find_program(self.args[0], text)

    # -- the cache -------------------------------------------------------------------------
    def _disk_key(self, photo: np.ndarray) -> str:
        digest = hashlib.sha256(
            _CACHE_VERSION + b"\0" + self.command.encode("utf-8", "surrogateescape")
        )
        digest.update(b"\0" + self._key(photo))
        return digest.hexdigest()

    def _cache_file(self, photo: np.ndarray) -> Path:
        key = self._disk_key(photo)
        return teacher_cache_dir() / key[:2] / f"{key}.npy"

    def _from_cache(self, path: Path) -> np.ndarray | None:
        try:
            return read_target(path)
        except (OSError, ValueError):  # absent, or a damaged entry: computed again
            return None

    def _to_cache(self, path: Path, output: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.save(buffer, output, allow_pickle=False)
        with contextlib.suppress(OSError):  # an unwritable cache never stops the work
            atomic_write_bytes(path, buffer.getvalue())

    # -- running ---------------------------------------------------------------------------
    def _compute(self, photo: np.ndarray, name: str) -> np.ndarray:
        path = self._cache_file(photo)
        cached = self._from_cache(path) if path.is_file() else None
        if cached is not None:
            return cached
        if not self.allow_run:
            raise TeacherNotRunError(
                f"filter {self.spec!r} was read from a checkpoint or run folder, and img2img never "
                f"runs a program recorded in a file; {name} has no cached output. Pass the filter "
                "yourself (--filter / filter=) to run it"
            )
        output = check_target(self._run(photo), f"filter {self.spec!r}: the output for {name}")
        if output.shape[:2] != photo.shape[:2]:
            raise RuntimeError(
                f"its output is {output.shape[0]}x{output.shape[1]}, the photo "
                f"{photo.shape[0]}x{photo.shape[1]}"
            )
        self._to_cache(path, output)
        return output

    def _run(self, photo: np.ndarray) -> np.ndarray:
        """Run the program on one photo in a private folder; ``RuntimeError`` says why it failed."""
        with tempfile.TemporaryDirectory(prefix="img2img-teacher-") as folder:
            source = Path(folder) / "in.png"
            target = Path(folder) / f"out{self.out_suffix}"
            ok, encoded = cv2.imencode(".png", cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
            if not ok:
                raise RuntimeError("cannot encode the photo as PNG")
            source.write_bytes(encoded.tobytes())
            args = [self.program] + [_substitute(arg, source, target) for arg in self.args[1:]]
            returncode, stderr = _execute(args, folder, self.timeout)
            if returncode != 0:
                raise RuntimeError(f"exit status {returncode}{_tail(stderr)}")
            if not target.is_file():
                raise RuntimeError(
                    f"the program wrote no output file ({{out}} = {target.name}){_tail(stderr)}"
                )
            try:
                return read_target(target)
            except (OSError, ValueError) as error:
                raise RuntimeError(
                    f"its output is unreadable: {' '.join(str(error).split())}{_tail(stderr)}"
                ) from None

    def prepare(
        self, photos: np.ndarray, names: Sequence[str] | None = None
    ) -> list[tuple[int, str]]:
        """Run the program on every photo not cached yet, in parallel; failures are returned.

        The first :data:`FIRST_PHOTOS` photos go first: if more than half of them
        fail, ``RuntimeError`` stops the work with their errors.

        Args:
            photos: uint8 ``(N, 3, H, W)``.
            names: How to name each photo in reports.

        Returns:
            ``(index, reason)`` for each photo that failed (its stderr's tail included).

        Raises:
            RuntimeError: When most of the first photos fail.
            TeacherNotRunError: For a photo not cached when the program may not run.
        """

        def one(index: int) -> tuple[int, str] | None:
            name = names[index] if names is not None else f"photo {index}"
            try:
                self.output(np.ascontiguousarray(photos[index].transpose(1, 2, 0)), name)
            except TeacherNotRunError:
                raise
            except (RuntimeError, ValueError, TypeError) as error:
                return index, " ".join(str(error).split())
            return None

        failed: list[tuple[int, str]] = []
        first = min(len(photos), FIRST_PHOTOS)
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            failed += [f for f in pool.map(one, range(first)) if f is not None]
            if first and len(failed) * 2 > first:
                shown = "; ".join(
                    f"{names[i] if names is not None else f'photo {i}'}: {reason}"
                    for i, reason in failed[:3]
                )
                raise RuntimeError(
                    f"filter {self.spec!r} failed on {len(failed)} of the first {first} photos, "
                    f"so it stopped: {shown}"
                )
            failed += [f for f in pool.map(one, range(first, len(photos))) if f is not None]
        return failed

    def _fill(self, photos: np.ndarray) -> None:
        """Run the program on a batch's photos in parallel; a failure stops the batch (``RuntimeError``)."""
        missing = [
            i
            for i in range(len(photos))
            if self._key(np.ascontiguousarray(photos[i].transpose(1, 2, 0))) not in self._store
        ]
        if not missing:  # the usual case once the data loader has prepared every crop
            return
        names = [f"photo {i} of the batch" for i in missing]
        failed = self.prepare(photos[missing], names)
        if failed:
            index, reason = failed[0]
            raise RuntimeError(
                f"filter {self.spec!r} failed on {len(failed)} of {len(photos)} photos of a batch; "
                f"{names[index]}: {reason}"
            )

    def _accept(self, key: bytes, output: np.ndarray, photo: np.ndarray, name: str) -> np.ndarray:
        try:
            return super()._accept(key, output, photo, name)
        except (TypeError, ValueError) as error:
            raise RuntimeError(str(error)) from None


def _execute(args: list[str], folder: str, timeout: float) -> tuple[int, bytes]:
    """Run ``args`` in ``folder`` with no shell; ``(exit status, stderr)``, or ``RuntimeError``.

    The program runs in a session of its own: on a timeout the whole process group
    is killed, so a child it started cannot keep the pipe (and this call) open.
    """
    try:
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=folder,
            start_new_session=True,
        )
    except OSError as error:
        raise RuntimeError(f"cannot start the program ({error})") from None
    with process:
        try:
            _, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            _, stderr = process.communicate()
            raise RuntimeError(f"timed out after {timeout:g} s{_tail(stderr)}") from None
        except BaseException:  # an interrupt: leave nothing running
            _kill_group(process)
            raise
    return process.returncode, stderr


def _kill_group(process: subprocess.Popen) -> None:
    """Kill the program and everything it started (its process group)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (OSError, AttributeError):  # gone already, or no process groups here
        process.kill()


def _substitute(arg: str, source: Path, target: Path) -> str:
    arg = arg.replace("{in}", os.fspath(source))
    for token in _OUT_EXTENSIONS:
        arg = arg.replace(token, os.fspath(target))
    return arg


def _tail(stderr: bytes | None) -> str:
    """``"; stderr: ..."`` with the last characters of a program's stderr (nothing when empty)."""
    if not stderr:
        return ""
    text = " ".join(stderr.decode("utf-8", "replace").split())
    if not text:
        return ""
    return f"; stderr: {'...' if len(text) > _STDERR_TAIL else ''}{text[-_STDERR_TAIL:]}"


def _find_program(program: str, spec: str) -> str:
    """The program's path, or ``FileNotFoundError`` saying how to fix it."""
    if os.sep in program or (os.altsep and os.altsep in program):
        path = Path(program).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return os.fspath(path)
        problem = "is not an executable file" if path.exists() else "does not exist"
        raise FileNotFoundError(
            f"filter {spec!r}: the program {program!r} {problem}; give the path of an executable"
        )
    found = shutil.which(program)
    if found is None:
        raise FileNotFoundError(
            f"filter {spec!r}: the program {program!r} is not on PATH; install it or give its full path"
        )
    return found
