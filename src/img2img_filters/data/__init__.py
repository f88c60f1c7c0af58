"""Photos for img2img: built-in samples, Tiny ImageNet, any folder; decoded once, split without leakage.

>>> from img2img_filters.data import load_filtered_dataset
>>> train, val = load_filtered_dataset()  # the built-in photos and the study's Sobel target
>>> x, y = train[0]
>>> tuple(x.shape), tuple(y.shape)
((3, 64, 64), (1, 64, 64))

The names below are imported on first use, so that importing one submodule (as
the decoding processes of :mod:`img2img_filters.data.cache` do) does not import PyTorch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from img2img_filters.data.cache import (
        CACHE_FORMAT,
        DecodedImages,
        decode_images,
        decoded_cache_dir,
    )
    from img2img_filters.data.download import (
        MAX_EXTRACT_BYTES,
        ChecksumError,
        DownloadError,
        UnsafeArchiveError,
        download_file,
        extract_zip,
        file_md5,
    )
    from img2img_filters.data.filtered import FilteredDataset, to_float
    from img2img_filters.data.folder import load_image_folder
    from img2img_filters.data.loader import DATA_SOURCES, default_filter, load_filtered_dataset
    from img2img_filters.data.paths import cache_dir
    from img2img_filters.data.samples import SAMPLE_NAMES, Samples, load_sample, load_samples
    from img2img_filters.data.sources import DataSource, list_data_sources
    from img2img_filters.data.split import choose_indices, split_by_group
    from img2img_filters.data.stream import FolderCrops, folder_crops
    from img2img_filters.data.tinyimagenet import (
        TINY_IMAGENET_MD5,
        TINY_IMAGENET_URL,
        TinyImageNet,
        TinyImageNetNotFoundError,
        download_tiny_imagenet,
        find_tiny_imagenet,
        is_tiny_imagenet_layout,
    )
    from img2img_filters.imageio import ImageReadError, list_images, read_image, write_image

_EXPORTS = {
    "img2img_filters.data.cache": (
        "CACHE_FORMAT",
        "DecodedImages",
        "decode_images",
        "decoded_cache_dir",
    ),
    "img2img_filters.data.download": (
        "MAX_EXTRACT_BYTES",
        "ChecksumError",
        "DownloadError",
        "UnsafeArchiveError",
        "download_file",
        "extract_zip",
        "file_md5",
    ),
    "img2img_filters.data.filtered": ("FilteredDataset", "to_float"),
    "img2img_filters.data.folder": ("load_image_folder",),
    "img2img_filters.data.loader": ("DATA_SOURCES", "default_filter", "load_filtered_dataset"),
    "img2img_filters.data.paths": ("cache_dir",),
    "img2img_filters.data.samples": ("SAMPLE_NAMES", "Samples", "load_sample", "load_samples"),
    "img2img_filters.data.sources": ("DataSource", "list_data_sources"),
    "img2img_filters.data.split": ("choose_indices", "split_by_group"),
    "img2img_filters.data.stream": ("FolderCrops", "folder_crops"),
    "img2img_filters.data.tinyimagenet": (
        "TINY_IMAGENET_MD5",
        "TINY_IMAGENET_URL",
        "TinyImageNet",
        "TinyImageNetNotFoundError",
        "download_tiny_imagenet",
        "find_tiny_imagenet",
        "is_tiny_imagenet_layout",
    ),
    "img2img_filters.imageio": ("ImageReadError", "list_images", "read_image", "write_image"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [
    "CACHE_FORMAT",
    "DATA_SOURCES",
    "MAX_EXTRACT_BYTES",
    "SAMPLE_NAMES",
    "TINY_IMAGENET_MD5",
    "TINY_IMAGENET_URL",
    "ChecksumError",
    "DataSource",
    "DecodedImages",
    "DownloadError",
    "FilteredDataset",
    "FolderCrops",
    "ImageReadError",
    "Samples",
    "TinyImageNet",
    "TinyImageNetNotFoundError",
    "UnsafeArchiveError",
    "cache_dir",
    "choose_indices",
    "decode_images",
    "decoded_cache_dir",
    "default_filter",
    "download_file",
    "download_tiny_imagenet",
    "extract_zip",
    "file_md5",
    "find_tiny_imagenet",
    "folder_crops",
    "is_tiny_imagenet_layout",
    "list_data_sources",
    "list_images",
    "load_filtered_dataset",
    "load_image_folder",
    "load_sample",
    "load_samples",
    "read_image",
    "split_by_group",
    "to_float",
    "write_image",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'img2img_filters.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
