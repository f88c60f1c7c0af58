"""Tiny ImageNet (200 classes of 64x64 photos) read from its original folder layout.

The layout, as the official archive unpacks it::

    tiny-imagenet-200/
      wnids.txt                      one class id (wnid) a line
      words.txt                      wnid <tab> names, for all of ImageNet
      train/<wnid>/images/*.JPEG     500 photos a class
      train/<wnid>/<wnid>_boxes.txt  file <tab> x0 y0 x1 y1
      val/images/*.JPEG              10,000 photos
      val/val_annotations.txt        file <tab> wnid <tab> x0 y0 x1 y1
      test/images/*.JPEG             10,000 photos without labels
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from img2img_filters.data.download import download_file, extract_zip
from img2img_filters.data.paths import cache_dir
from img2img_filters.imageio import list_images

__all__ = [
    "TINY_IMAGENET_DIRNAME",
    "TINY_IMAGENET_MD5",
    "TINY_IMAGENET_URL",
    "TinyImageNet",
    "TinyImageNetNotFoundError",
    "download_tiny_imagenet",
    "find_tiny_imagenet",
    "is_tiny_imagenet_layout",
]

#: The official archive and its MD5 checksum.
TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_IMAGENET_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
#: The folder the archive unpacks to.
TINY_IMAGENET_DIRNAME = "tiny-imagenet-200"

_SPLITS = ("train", "val", "test")


class TinyImageNetNotFoundError(FileNotFoundError):
    """Tiny ImageNet is missing or incomplete; the message says how to fetch it in Python.

    The command line words the fix its own way (``--download``) from :attr:`problem`.

    Attributes:
        problem: What is missing, without the fix.
    """

    #: How to fetch it, in Python and from a shell.
    fix = "run `img2img data download tiny-imagenet` or pass download=True"

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(f"{problem}; {self.fix}")

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return type(self), (self.problem,)


def find_tiny_imagenet() -> Path:
    """The default Tiny ImageNet folder, whether or not it exists yet.

    ``$IMG2IMG_DATA/tiny-imagenet-200`` when ``IMG2IMG_DATA`` is set, else
    ``cache_dir() / "tiny-imagenet-200"`` (``~/.cache/img2img/tiny-imagenet-200``
    unless ``IMG2IMG_CACHE`` is set).

    Returns:
        The folder's path.
    """
    data = os.environ.get("IMG2IMG_DATA", "").strip()
    base = Path(data).expanduser() if data else cache_dir()
    return base / TINY_IMAGENET_DIRNAME


def is_tiny_imagenet_layout(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder in Tiny ImageNet's layout (``wnids.txt``, ``train/``, ``val/``)."""
    path = Path(path)
    return (path / "wnids.txt").is_file() and (path / "train").is_dir() and (path / "val").is_dir()


class TinyImageNet:
    """The file list and labels of one split of Tiny ImageNet (no pixels are read here).

    Files are in sorted path order. ``labels`` index :attr:`classes`, the wnids in
    the order of ``wnids.txt``; the unlabelled test split has label ``-1``.

    Attributes:
        root: The dataset folder.
        split: ``"train"``, ``"val"`` or ``"test"``.
        paths: The image files, sorted.
        labels: int64 ``(N,)`` class indices (``-1`` for ``test``).
        boxes: int64 ``(N, 4)`` bounding boxes ``x0, y0, x1, y1`` (``-1`` where unknown).
        classes: The wnids.
        class_names: The first name of each class from ``words.txt`` (the wnid if absent).

    Args:
        root: The dataset folder (default :func:`find_tiny_imagenet`).
        split: Which split.
        download: Download and extract the official archive when ``root`` is missing.

    Raises:
        ValueError: For an unknown split.
        FileNotFoundError: If the folder or a file of the split is missing, with the fix.
    """

    url = TINY_IMAGENET_URL
    md5 = TINY_IMAGENET_MD5

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        split: str = "train",
        *,
        download: bool = False,
    ) -> None:
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {list(_SPLITS)}; got {split!r}")
        self.root = Path(root).expanduser() if root is not None else find_tiny_imagenet()
        self.split = split
        if download and not is_tiny_imagenet_layout(self.root):
            download_tiny_imagenet(self.root)
        if not is_tiny_imagenet_layout(self.root):
            if not self.root.exists():
                problem = f"Tiny ImageNet at {str(self.root)!r} not found"
            else:
                problem = (
                    f"{str(self.root)!r} is not in the Tiny ImageNet layout "
                    "(expected wnids.txt, train/ and val/)"
                )
            raise TinyImageNetNotFoundError(problem)
        self.classes = _read_lines(self.root / "wnids.txt")
        if not self.classes:
            raise TinyImageNetNotFoundError(f"{str(self.root / 'wnids.txt')!r} lists no classes")
        self.class_names = _read_words(self.root / "words.txt", self.classes)
        self.class_to_index = {wnid: i for i, wnid in enumerate(self.classes)}
        reader = {"train": self._read_train, "val": self._read_val, "test": self._read_test}[split]
        entries = sorted(reader())
        self.paths: list[Path] = [path for path, _, _ in entries]
        self.labels = np.array([label for _, label, _ in entries], dtype=np.int64)
        self.boxes = np.array([box for _, _, box in entries], dtype=np.int64).reshape(-1, 4)

    def _read_train(self) -> list[tuple[Path, int, tuple[int, ...]]]:
        entries = []
        for wnid in self.classes:
            folder = self.root / "train" / wnid / "images"
            if not folder.is_dir():
                raise TinyImageNetNotFoundError(
                    f"Tiny ImageNet class folder {str(folder)!r} not found"
                )
            boxes = _read_boxes(self.root / "train" / wnid / f"{wnid}_boxes.txt", columns=4)
            label = self.class_to_index[wnid]
            for path in list_images(folder):
                entries.append((path, label, boxes.get(path.name, (-1, -1, -1, -1))))
        return entries

    def _read_val(self) -> list[tuple[Path, int, tuple[int, ...]]]:
        annotations = self.root / "val" / "val_annotations.txt"
        if not annotations.is_file():
            raise TinyImageNetNotFoundError(
                f"Tiny ImageNet annotations {str(annotations)!r} not found"
            )
        entries, missing = [], []
        for number, line in enumerate(annotations.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < 2 or fields[1] not in self.class_to_index:
                raise ValueError(
                    f"{str(annotations)!r} line {number}: expected 'file<TAB>wnid<TAB>x0<TAB>y0<TAB>x1"
                    f"<TAB>y1' with a wnid from wnids.txt; got {line!r}"
                )
            path = self.root / "val" / "images" / fields[0]
            if not path.is_file():
                missing.append(fields[0])
            entries.append((path, self.class_to_index[fields[1]], _parse_box(fields[2:6])))
        if missing:
            raise TinyImageNetNotFoundError(
                f"{len(missing)} validation images listed in {str(annotations)!r} are missing "
                f"(first: {missing[0]!r})"
            )
        return entries

    def _read_test(self) -> list[tuple[Path, int, tuple[int, ...]]]:
        folder = self.root / "test" / "images"
        if not folder.is_dir():
            raise TinyImageNetNotFoundError(f"Tiny ImageNet test images {str(folder)!r} not found")
        return [(path, -1, (-1, -1, -1, -1)) for path in list_images(folder)]

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        return (
            f"TinyImageNet(root={str(self.root)!r}, split={self.split!r}, "
            f"{len(self)} images, {len(self.classes)} classes)"
        )


def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _read_words(path: Path, classes: list[str]) -> list[str]:
    """The first name of each class in ``words.txt`` (wnid <tab> comma-separated names)."""
    names: dict[str, str] = {}
    if path.is_file():
        wanted = set(classes)
        with path.open(encoding="utf-8") as file:
            for line in file:
                wnid, _, words = line.rstrip("\n").partition("\t")
                if wnid in wanted:
                    names[wnid] = words.split(",")[0].strip() or wnid
    return [names.get(wnid, wnid) for wnid in classes]


def _parse_box(fields: list[str]) -> tuple[int, ...]:
    try:
        box = tuple(int(v) for v in fields)
    except ValueError:
        return (-1, -1, -1, -1)
    return box if len(box) == 4 else (-1, -1, -1, -1)


def _read_boxes(path: Path, columns: int) -> dict[str, tuple[int, ...]]:
    """``file -> (x0, y0, x1, y1)`` from a boxes file (missing file: no boxes)."""
    if not path.is_file():
        return {}
    boxes = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split("\t")
        if len(fields) >= 1 + columns:
            boxes[fields[0]] = _parse_box(fields[1 : 1 + columns])
    return boxes


def download_tiny_imagenet(
    root: str | os.PathLike[str] | None = None,
    *,
    url: str = TINY_IMAGENET_URL,
    md5: str | None = TINY_IMAGENET_MD5,
    keep_archive: bool = False,
    progress: bool = True,
) -> Path:
    """Download and extract Tiny ImageNet into ``root``; nothing happens if it is already there.

    The archive (about 237 MB) is saved next to ``root``, checked against its MD5,
    extracted safely (:func:`extract_zip`) and removed unless ``keep_archive``.

    Args:
        root: The dataset folder to create (default :func:`find_tiny_imagenet`).
        url: The archive's address.
        md5: Its MD5, or ``None`` to skip the check.
        keep_archive: Keep the zip file after extraction.
        progress: Show a progress bar while downloading.

    Returns:
        ``root``, now in the Tiny ImageNet layout.

    Raises:
        DownloadError: If the download fails.
        FileExistsError: If ``root`` exists but is not a complete dataset.
        RuntimeError: If the archive does not hold the expected layout.
    """
    root = Path(root).expanduser() if root is not None else find_tiny_imagenet()
    if is_tiny_imagenet_layout(root):
        return root
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(
            f"{str(root)!r} exists but is not a complete Tiny ImageNet; remove it and download again"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    archive = root.parent / (Path(url.split("?")[0]).name or f"{TINY_IMAGENET_DIRNAME}.zip")
    download_file(url, archive, md5, progress=progress)
    try:
        with zipfile.ZipFile(archive) as zf:
            tops = {
                info.filename.replace("\\", "/").lstrip("/").split("/")[0] for info in zf.infolist()
            }
    except zipfile.BadZipFile as error:  # not an archive at all (an error page, say)
        archive.unlink(missing_ok=True)  # else it would be taken as downloaded next time
        raise ValueError(
            f"archive {str(archive)!r} downloaded from {url} is not a valid zip file ({error}); "
            "it was removed, try again"
        ) from None
    if len(tops) != 1:
        raise RuntimeError(
            f"archive {str(archive)!r} should hold one folder; it holds {sorted(tops)}"
        )
    top = tops.pop()
    if root.exists():
        root.rmdir()  # empty, checked above
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.download-", dir=root.parent))
    try:
        extract_zip(archive, staging)
        if not is_tiny_imagenet_layout(staging / top):
            raise RuntimeError(
                f"archive {str(archive)!r} does not hold the Tiny ImageNet layout under {top!r}"
            )
        os.replace(staging / top, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not keep_archive:
        archive.unlink(missing_ok=True)
    return root
