"""Where img2img keeps downloaded data and caches."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir() -> Path:
    """The cache folder: ``$IMG2IMG_CACHE``, else ``~/.cache/img2img``.

    It holds downloaded datasets (unless ``$IMG2IMG_DATA`` says otherwise) and
    the decoded-image cache (``decoded/``). The folder is not created here.

    Returns:
        The folder's path (``~`` expanded).
    """
    value = os.environ.get("IMG2IMG_CACHE", "").strip()
    return Path(value).expanduser() if value else Path.home() / ".cache" / "img2img"
