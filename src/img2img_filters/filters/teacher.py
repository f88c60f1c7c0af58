"""The base of teachers: a :class:`~img2img_filters.filters.Filter` whose outputs come from outside.

See :mod:`img2img_filters.filters.external` for the teachers themselves.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from img2img_filters.data.paths import cache_dir
from img2img_filters.data.targets import check_target, target_scale
from img2img_filters.filters.chain import Filter

__all__ = ["TeacherFilter", "TeacherNotRunError", "teacher_cache_dir"]


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

    def _fill(self, photos: np.ndarray) -> None:
        """Make the outputs of a batch's photos ``(B, 3, H, W)`` before they are read (here: one by one)."""

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
        self._fill(photos.numpy())
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
