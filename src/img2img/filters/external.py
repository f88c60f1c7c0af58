"""Teachers img2img cannot compute itself: an external program (``cmd:``) or a Python callable.

A teacher maps one uint8 RGB photo ``(H, W, 3)`` to a target ``(H, W, C)``,
``C`` in {1, 3}, uint8, uint16 or float32; its outputs are kept at that depth
and scaled to floats (``/255``, ``/65535``, as is). Outputs are computed once
per photo, in :meth:`TeacherFilter.prepare` (which the data loader calls on
every crop; a photo that fails is reported and skipped) or when a batch needs
them, and remembered by the photo's bytes.

``cmd:PROGRAM ARGS...``: the program runs once per photo, without a shell (the
arguments are split as a POSIX shell would, by :func:`shlex.split`). ``{in}``
becomes a lossless PNG of the photo in a private temporary folder and
``{out}`` the file the program must write: a PNG, or by its extension
``{out.tif}`` (8/16-bit or float32 TIFF) or ``{out.npy}`` (see
:func:`img2img.data.targets.read_target`). Photos run in parallel (a pool of
threads, each waiting on its own process), each under a timeout; outputs are
cached on disk under ``cache_dir()/teacher`` by a hash of the command text and
the photo's bytes, so a photo is never sent to the same command twice.

A ``cmd:`` spec runs only when the caller passes it: specs read from
checkpoints and run folders are built with ``allow_commands=False``, and such a
filter only reads the cache (:class:`TeacherNotRunError` for a photo not in it).
"""

from __future__ import annotations

import hashlib
import io
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from img2img.data.paths import cache_dir
from img2img.data.targets import check_target, read_target, target_scale
from img2img.filters.chain import Filter

__all__ = [
    "COMMAND_PREFIX",
    "TEACHER_PREFIXES",
    "CallableFilter",
    "CommandFilter",
    "GivenTargets",
    "TeacherFilter",
    "TeacherNotRunError",
    "teacher_cache_dir",
    "teacher_from_spec",
]

COMMAND_PREFIX = "cmd:"
CALLABLE_PREFIX = "callable:"
PAIRS_PREFIX = "pairs:"
#: Specs of teachers: a program, a callable (recorded only), targets given as files.
TEACHER_PREFIXES = (COMMAND_PREFIX, CALLABLE_PREFIX, PAIRS_PREFIX)
_OUT_EXTENSIONS = {"{out}": ".png", "{out.png}": ".png", "{out.tif}": ".tif"}
_OUT_EXTENSIONS.update({"{out.tiff}": ".tiff", "{out.npy}": ".npy"})
_CACHE_VERSION = b"img2img-teacher-1"
_STDERR_TAIL = 300
#: Photos tried before the rest: more than half of them failing stops the work.
FIRST_PHOTOS = 16


class TeacherNotRunError(RuntimeError):
    """A recorded ``cmd:`` teacher needs a photo that is not in the cache (it is never run)."""


def teacher_cache_dir() -> Path:
    """Where teacher outputs are cached: ``cache_dir() / "teacher"``."""
    return cache_dir() / "teacher"


class _Opaque:
    """The one stage of a teacher: non-linear, of unknown support (for ``arch=auto``)."""

    name = "external"
    linear = False
    border = None

    def radius(self) -> int:
        return 0

    def min_size(self) -> int:
        return 1


class TeacherFilter(Filter):
    """A filter whose outputs come from outside: computed once per photo and remembered.

    Subclasses implement :meth:`_compute` (one photo) and may override :meth:`prepare`.

    Args:
        spec: The spec (what checkpoints record).
        radius: How far an output pixel is assumed to look, for ``arch=auto`` (default 3).
    """

    def __init__(self, spec: str, *, radius: int = 3) -> None:
        super().__init__(spec, [_Opaque()])
        self._radius = int(radius)
        self._store: dict[bytes, np.ndarray] = {}
        self._dtype: np.dtype | None = None
        self._channels: int | None = None
        self._low, self._high = np.inf, -np.inf
        self._lock = threading.Lock()

    # -- description -----------------------------------------------------------------------
    @property
    def canonical(self) -> str:  # type: ignore[override]
        """The spec itself."""
        return self.spec

    @property
    def params(self) -> list[dict[str, Any]]:
        """No parameters img2img knows of."""
        return [{"name": "external"}]

    @property
    def linear(self) -> bool:
        """A teacher is never treated as linear."""
        return False

    @property
    def backend(self) -> str:
        """``"external"``: outputs are made off the device, photo by photo."""
        return "external"

    @property
    def border(self) -> str:
        """Unknown; ``reflect101`` (OpenCV's default) is assumed."""
        return "reflect101"

    @property
    def kernel(self) -> None:  # type: ignore[override]
        """No kernel."""
        return None

    @property
    def radius(self) -> int:  # type: ignore[override]
        """The assumed radius (the teacher's support is unknown)."""
        return self._radius

    @property
    def min_size(self) -> int:
        """1: any photo is passed on."""
        return 1

    @property
    def out_channels(self) -> int:
        """Channels of the outputs, known once one photo has gone through the teacher."""
        if self._channels is None:
            raise RuntimeError(
                f"filter {self.spec!r}: its output channels are known only after it ran on a "
                "photo; call prepare(photos) first (load_filtered_dataset does)"
            )
        return self._channels

    @property
    def output_dtype(self) -> np.dtype | None:
        """The outputs' sample type (uint8, uint16 or float32), ``None`` before the first one."""
        return self._dtype

    @property
    def output_range(self) -> tuple[float, float]:  # type: ignore[override]
        """``(0, 1)`` for integer outputs (after scaling); for floats the range seen on the data."""
        if self._dtype is None or self._dtype != np.float32 or self._low > self._high:
            return 0.0, 1.0
        return float(self._low), float(self._high)

    def describe(self) -> str:
        """One line: the spec, the outputs' type and channels once known."""
        kind = "outputs not computed yet"
        if self._dtype is not None:
            kind = f"{self._channels}-channel {self._dtype} outputs"
        return f"{self.spec} (external teacher, {kind})"

    def __eq__(self, other: object) -> bool:
        return other is self

    def __hash__(self) -> int:
        return id(self)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- outputs ---------------------------------------------------------------------------
    def _key(self, photo: np.ndarray) -> bytes:
        """The photo's identity for this teacher: a hash of its size and bytes."""
        digest = hashlib.sha256(f"{photo.shape[0]}x{photo.shape[1]}\0".encode())
        digest.update(np.ascontiguousarray(photo).data)
        return digest.digest()

    def _compute(self, photo: np.ndarray, name: str) -> np.ndarray:
        """The teacher's output for one photo ``(H, W, 3)`` uint8, ``(H, W, C)`` (raises on failure)."""
        raise NotImplementedError

    def _accept(self, key: bytes, output: np.ndarray, photo: np.ndarray, name: str) -> np.ndarray:
        """Check an output against the photo and the earlier outputs, then remember it."""
        output = check_target(output, f"filter {self.spec!r}: the output for {name}")
        if output.shape[:2] != photo.shape[:2]:
            raise ValueError(
                f"filter {self.spec!r}: the output for {name} is {output.shape[0]}x"
                f"{output.shape[1]}, the photo {photo.shape[0]}x{photo.shape[1]}"
            )
        with self._lock:
            if self._dtype is None:
                self._dtype, self._channels = output.dtype, output.shape[2]
            if output.dtype != self._dtype or output.shape[2] != self._channels:
                raise ValueError(
                    f"filter {self.spec!r}: the output for {name} is {output.shape[2]}-channel "
                    f"{output.dtype}, earlier ones {self._channels}-channel {self._dtype}"
                )
            if output.dtype == np.float32:
                self._low = min(self._low, float(output.min()))
                self._high = max(self._high, float(output.max()))
            stored = np.ascontiguousarray(output.transpose(2, 0, 1))
            self._store[key] = stored
        return stored

    def output(self, photo: np.ndarray, name: str = "a photo") -> np.ndarray:
        """The teacher's output for one photo, computed on first use.

        Args:
            photo: uint8 ``(H, W, 3)`` RGB.
            name: How errors name the photo.

        Returns:
            ``(C, H, W)`` uint8, uint16 or float32, as the teacher made it.
        """
        key = self._key(photo)
        found = self._store.get(key)
        if found is not None:
            return found
        return self._accept(key, self._compute(photo, name), photo, name)

    def prepare(
        self, photos: np.ndarray, names: Sequence[str] | None = None
    ) -> list[tuple[int, str]]:
        """Compute the outputs of many photos; failures are returned, not raised.

        Args:
            photos: uint8 ``(N, 3, H, W)`` (as datasets store them).
            names: How to name each photo in reports (default ``"photo <i>"``).

        Returns:
            ``(index, reason)`` for each photo that gave no usable output.
        """
        failed = []
        for index in range(len(photos)):
            name = names[index] if names is not None else f"photo {index}"
            self.output(np.ascontiguousarray(photos[index].transpose(1, 2, 0)), name)
        return failed

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """The teacher's outputs for a batch, as floats (uint8 /255, uint16 /65535, float as is).

        The batch is turned back into uint8 photos (``round(x * 255)``): a teacher
        sees what a photo file would hold.

        Args:
            batch: ``(B, 3, H, W)`` float RGB in [0, 1].

        Returns:
            ``(B, C, H, W)`` float32 on the batch's device.
        """
        if not isinstance(batch, torch.Tensor) or not batch.is_floating_point():
            raise TypeError(f"filter {self.spec!r}: expected a float torch.Tensor batch in [0, 1]")
        if batch.dim() != 4 or batch.shape[1] != 3:
            raise ValueError(
                f"filter {self.spec!r}: expected a batch of shape (B, 3, H, W); got {tuple(batch.shape)}"
            )
        photos = batch.detach().float().mul(255.0).round_().clamp_(0, 255).to("cpu", torch.uint8)
        photos = photos.numpy().transpose(0, 2, 3, 1)
        outputs = [
            self.output(np.ascontiguousarray(photo), f"photo {i} of the batch")
            for i, photo in enumerate(photos)
        ]
        if not outputs:
            return batch.new_zeros((0, self.out_channels, *batch.shape[-2:]))
        stacked = np.stack(outputs)
        scale = target_scale(stacked.dtype)
        values = torch.from_numpy(stacked.astype(np.float32))
        if scale != 1.0:
            values.mul_(np.float32(scale))
        return values.to(batch.device)


class CallableFilter(TeacherFilter):
    """A Python callable as the teacher: ``fn(photo (H, W, 3) uint8) -> (H, W) or (H, W, C)``.

    Outputs are remembered in memory for the life of the filter (not on disk: a
    callable has no stable identity). A callable that raises or returns the wrong
    shape or dtype stops the work with a one-line error naming the photo.
    """

    def __init__(self, function: Callable[[np.ndarray], np.ndarray], *, radius: int = 3) -> None:
        if not callable(function):
            raise TypeError(f"filter must be a spec or a callable; got {type(function).__name__}")
        module = getattr(function, "__module__", None) or "?"
        name = getattr(function, "__qualname__", None) or type(function).__name__
        super().__init__(f"{CALLABLE_PREFIX}{module}.{name}", radius=radius)
        self.function = function

    def _compute(self, photo: np.ndarray, name: str) -> np.ndarray:
        view = photo.copy()
        view.flags.writeable = False
        try:
            output = self.function(view)
        except Exception as error:
            detail = " ".join(str(error).split())
            raise ValueError(
                f"filter {self.spec!r} raised {type(error).__name__} on {name}: {detail}"
            ) from None
        return output


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
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
            with os.fdopen(handle, "wb") as file:
                file.write(buffer.getvalue())
            os.replace(temp, path)
        except OSError:  # an unwritable cache never stops the work
            pass

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
            try:
                done = subprocess.run(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    cwd=folder,
                    timeout=self.timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired as error:
                raise RuntimeError(
                    f"timed out after {self.timeout:g} s{_tail(error.stderr)}"
                ) from None
            except OSError as error:
                raise RuntimeError(f"cannot start the program ({error})") from None
            if done.returncode != 0:
                raise RuntimeError(f"exit status {done.returncode}{_tail(done.stderr)}")
            if not target.is_file():
                raise RuntimeError(
                    f"the program wrote no output file ({{out}} = {target.name}){_tail(done.stderr)}"
                )
            try:
                return read_target(target)
            except (OSError, ValueError) as error:
                raise RuntimeError(
                    f"its output is unreadable: {' '.join(str(error).split())}{_tail(done.stderr)}"
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

    def _accept(self, key: bytes, output: np.ndarray, photo: np.ndarray, name: str) -> np.ndarray:
        try:
            return super()._accept(key, output, photo, name)
        except (TypeError, ValueError) as error:
            raise RuntimeError(str(error)) from None


class GivenTargets(TeacherFilter):
    """The teacher of photo pairs: its outputs are the target files, given with the photos.

    It describes the targets (channels, type, range) for training and metrics;
    it cannot make outputs for photos it was not given.
    """

    def _compute(self, photo: np.ndarray, name: str) -> np.ndarray:
        raise RuntimeError(
            f"filter {self.spec!r}: the targets come as files paired with the photos; there is "
            f"none for {name} (use the dataset's batches)"
        )

    def describe(self) -> str:
        """One line: the spec and the targets' type and channels."""
        if self._dtype is None:
            return f"{self.spec} (targets given as files)"
        return f"{self.spec} (targets given as files, {self._channels}-channel {self._dtype})"

    def describe_targets(self, dtype: np.dtype, channels: int, low: float, high: float) -> None:
        """Record the targets' type, channels and (for floats) range."""
        self._dtype, self._channels = np.dtype(dtype), int(channels)
        self._low, self._high = float(low), float(high)


def teacher_from_spec(
    spec: str | Callable[[np.ndarray], np.ndarray], *, allow_commands: bool = False
) -> TeacherFilter:
    """The teacher for a callable or a ``cmd:``, ``callable:`` or ``pairs:`` spec.

    Args:
        spec: A callable, or a spec string with one of :data:`TEACHER_PREFIXES`.
        allow_commands: Whether a ``cmd:`` program may run (else: outputs from the cache only).

    Raises:
        ValueError: For a ``callable:`` spec (a recorded callable cannot be rebuilt) or a
            bad command.
        FileNotFoundError: For a program that does not exist (when it may run).
    """
    if callable(spec):
        return CallableFilter(spec)
    text = spec.strip()
    if text.startswith(COMMAND_PREFIX):
        return CommandFilter(text, allow_run=allow_commands)
    if text.startswith(PAIRS_PREFIX):
        return GivenTargets(text)
    raise ValueError(
        f"filter {text!r}: a Python callable cannot be rebuilt from its recorded name; pass the "
        "callable itself as filter="
    )


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
