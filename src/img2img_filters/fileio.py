"""Writing files safely: through a temporary name in the same folder, renamed into place.

Every file the package writes into a run folder, a report or a figure goes
through :func:`atomic_write`: a process killed at any moment, or a full disk,
leaves either the previous file or the new one under the name, never a
partial file, and no temporary file behind (except after a hard kill, when a
short hidden ``.NAME.XXXXXX.tmp`` may remain). New files get the usual
permissions (``0o666`` less the umask, so ``0o644`` under umask ``022``), not
the private ``0o600`` of :func:`tempfile.mkstemp`.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "check_not_input"]

#: Characters of the destination's name kept in the temporary name (names stay short).
TEMP_NAME_CHARS = 24


def _temporary(path: Path) -> Path:
    """A fresh hidden name beside ``path``, created empty with the usual permissions."""
    for _ in range(100):
        candidate = path.with_name(f".{path.name[:TEMP_NAME_CHARS]}.{secrets.token_hex(3)}.tmp")
        try:
            descriptor = os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            continue
        os.close(descriptor)
        return candidate
    raise FileExistsError(f"no free temporary name beside {str(path)!r}")


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Write a file through a temporary name in the same folder, then rename it into place.

    The data is flushed to disk (``fsync``) before the rename. On any error
    (a full disk included) the temporary file is removed and the previous file
    under ``path`` is left as it was.

    Args:
        path: Destination (its folder is created when missing).
        write: Called with the temporary path; it must write the whole file there.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary(path)
    try:
        mode = temporary.stat().st_mode & 0o777  # 0o666 less the umask
        write(temporary)
        os.chmod(temporary, mode)  # writers that recreate the file (safetensors) make it 0o600
        with open(temporary, "rb") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` as UTF-8 to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _same(a: Path, b: Path) -> bool:
    try:
        if os.path.samefile(a, b):
            return True
    except OSError:  # one of them does not exist
        pass
    return a.resolve() == b.resolve()


def check_not_input(
    output: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]], option: str
) -> Path:
    """Refuse an output path that names one of a command's inputs.

    Args:
        output: The file about to be written.
        inputs: The files the command reads (existing or not); links are followed.
        option: The option that gave ``output``, named in the error (``"--out"``).

    Returns:
        ``output`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: If ``output`` is one of ``inputs`` (or a link to one).
    """
    path = Path(output)
    for item in inputs:
        if _same(path, Path(item)):
            raise ValueError(
                f"{option} {str(path)!r} is an input of this command ({str(item)!r}); "
                "writing there would replace it: choose another output file"
            )
    return path
