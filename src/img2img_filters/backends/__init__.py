"""How a training step runs: the :class:`Engine` interface, and the CPU-only engines in ``cpu``."""

from img2img_filters.backends.engine import Engine

__all__ = ["Engine"]
