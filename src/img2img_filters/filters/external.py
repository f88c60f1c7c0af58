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
:func:`img2img_filters.data.targets.read_target`). Photos run in parallel (a pool of
threads, each waiting on its own process), each under a timeout; outputs are
cached on disk under ``cache_dir()/teacher`` by a hash of the command text and
the photo's bytes, so a photo is never sent to the same command twice.

A ``cmd:`` spec runs only when the caller passes it: specs read from
checkpoints and run folders are built with ``allow_commands=False``, and such a
filter only reads the cache (:class:`TeacherNotRunError` for a photo not in it).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from img2img_filters.filters.command import COMMAND_PREFIX, CommandFilter
from img2img_filters.filters.teacher import TeacherFilter, TeacherNotRunError, teacher_cache_dir

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

CALLABLE_PREFIX = "callable:"
PAIRS_PREFIX = "pairs:"
#: Specs of teachers: a program, a callable (recorded only), targets given as files.
TEACHER_PREFIXES = (COMMAND_PREFIX, CALLABLE_PREFIX, PAIRS_PREFIX)


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
