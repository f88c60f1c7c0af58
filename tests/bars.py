"""A stand-in for tqdm's progress bar that records how each bar was made and how far it went."""

from __future__ import annotations

from typing import Any, ClassVar


class RecordingBar:
    """Stands in for tqdm: records how each bar was made and how far it went."""

    made: ClassVar[list[RecordingBar]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.kwargs, self.n, self.closed = kwargs, 0, False
        RecordingBar.made.append(self)

    def update(self, count: int = 1) -> None:
        self.n += count

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        self.closed = True
