"""The data sources ``data=`` (``--data``) takes, described: what each is and where it is read.

>>> [source.name for source in list_data_sources()]
['samples', 'tiny-imagenet', 'FOLDER']

Nothing here reads pixels or imports PyTorch.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DataSource", "list_data_sources"]


@dataclass(frozen=True)
class DataSource:
    """One kind of photos to learn from.

    Attributes:
        name: What ``data=`` / ``--data`` takes (``FOLDER``: any folder's path).
        description: What the photos are and how they are split.
        downloadable: Whether ``img2img data download NAME`` fetches it.
    """

    name: str
    description: str
    downloadable: bool = False


_SOURCES = (
    DataSource(
        "samples",
        "the photos that ship inside scikit-image's wheel (the default; no download), cut "
        "into 64x64 crops; the validation split never shares a photo with training",
    ),
    DataSource(
        "tiny-imagenet",
        "Tiny ImageNet's 100,000 training and 10,000 validation photos (64x64), read from "
        "$IMG2IMG_DATA/tiny-imagenet-200 or the cache folder; fetched by "
        "`img2img data download tiny-imagenet` or train's --download",
        downloadable=True,
    ),
    DataSource(
        "FOLDER",
        "any folder of images (sub-folders included), cut into crops; a folder in Tiny "
        "ImageNet's layout is read as Tiny ImageNet; with --targets, the inputs of photo pairs",
    ),
)


def list_data_sources() -> list[DataSource]:
    """The data sources, the named ones first (see :data:`~img2img_filters.data.loader.DATA_SOURCES`).

    Returns:
        One :class:`DataSource` per kind: ``samples``, ``tiny-imagenet``, then ``FOLDER``.
    """
    return list(_SOURCES)
