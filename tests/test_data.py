"""The data layer: Tiny ImageNet, built-in samples, folders, the decode cache, splits, the loader."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import img2img_filters.data as data_api
from img2img_filters.data import (
    SAMPLE_NAMES,
    FilteredDataset,
    TinyImageNet,
    cache_dir,
    decode_images,
    find_tiny_imagenet,
    is_tiny_imagenet_layout,
    load_filtered_dataset,
    load_image_folder,
    load_samples,
    split_by_group,
)
from img2img_filters.data import cache as cache_module
from img2img_filters.data.crops import grid_crops, grid_positions, resize_shorter
from img2img_filters.imageio import read_image

TOLERANCE = 1e-5


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMG2IMG_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("IMG2IMG_DATA", raising=False)


@pytest.fixture(scope="module")
def mini_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One decode cache for the whole module, so the mini set is decoded once."""
    return tmp_path_factory.mktemp("mini-cache")


@pytest.fixture(scope="module")
def mini_split(
    mini_root: Path, mini_cache: Path
) -> Iterator[tuple[FilteredDataset, FilteredDataset]]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IMG2IMG_CACHE", str(mini_cache))
        yield load_filtered_dataset(data=mini_root)


def _opencv_study_sobel(rgb_uint8: np.ndarray) -> np.ndarray:
    """The study's target computed with OpenCV alone, on (H, W, 3) uint8 RGB."""
    rgb = rgb_uint8.astype(np.float32) / np.float32(255.0)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return cv2.Sobel(cv2.GaussianBlur(gray, (3, 3), 0), cv2.CV_32F, 1, 1, ksize=3)


def _no_shared_groups(train: FilteredDataset, val: FilteredDataset) -> None:
    train_groups = set(train.groups[train.indices].tolist())
    val_groups = set(val.groups[val.indices].tolist())
    assert not train_groups & val_groups


# -- Tiny ImageNet ----------------------------------------------------------------------------------


def test_tiny_imagenet_train(mini_root: Path) -> None:
    train = TinyImageNet(mini_root, "train")
    wnids = (mini_root / "wnids.txt").read_text().split()
    files = sorted(
        Path(folder) / name
        for folder, _, names in os.walk(mini_root / "train")
        for name in names
        if name.endswith(".JPEG")
    )
    assert len(train) == len(files) == 5000
    assert train.paths == files
    assert train.classes == wnids and len(wnids) == 10
    assert train.labels.dtype == np.int64
    for path, label in zip(train.paths, train.labels, strict=True):
        assert train.classes[label] == path.parent.parent.name
    assert np.bincount(train.labels).tolist() == [500] * 10
    words = dict(line.split("\t") for line in (mini_root / "words.txt").read_text().splitlines())
    assert train.class_names == [words[w].split(",")[0].strip() for w in wnids]
    first = train.paths[0]
    line = next(
        row
        for row in (first.parent.parent / f"{first.parent.parent.name}_boxes.txt")
        .read_text()
        .splitlines()
        if row.startswith(first.name + "\t")
    )
    assert train.boxes[0].tolist() == [int(v) for v in line.split("\t")[1:5]]


def test_tiny_imagenet_val_and_test(mini_root: Path) -> None:
    val = TinyImageNet(mini_root, "val")
    rows = [
        line.split("\t")
        for line in (mini_root / "val" / "val_annotations.txt").read_text().splitlines()
    ]
    assert len(val) == len(rows) == 500
    expected = {row[0]: (row[1], [int(v) for v in row[2:6]]) for row in rows}
    assert [p.name for p in val.paths] == sorted(expected)
    for path, label, box in zip(val.paths, val.labels, val.boxes, strict=True):
        wnid, expected_box = expected[path.name]
        assert val.classes[label] == wnid
        assert box.tolist() == expected_box
    test = TinyImageNet(mini_root, "test")
    assert len(test) == len(list((mini_root / "test" / "images").iterdir())) == 200
    assert (test.labels == -1).all()
    assert test.paths == sorted(test.paths)
    assert "200 images" in repr(test)


def test_tiny_imagenet_errors(tmp_path: Path) -> None:
    with pytest.raises(
        FileNotFoundError, match="not found; run `img2img data download tiny-imagenet`"
    ):
        TinyImageNet(tmp_path / "absent")
    (tmp_path / "wrong").mkdir()
    (tmp_path / "wrong" / "photo.png").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match=r"not in the Tiny ImageNet layout.*download=True"):
        TinyImageNet(tmp_path / "wrong")
    with pytest.raises(ValueError, match="split"):
        TinyImageNet(tmp_path, "holdout")
    assert not is_tiny_imagenet_layout(tmp_path / "wrong")


def test_default_locations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cache_dir() == tmp_path / "cache"
    assert find_tiny_imagenet() == tmp_path / "cache" / "tiny-imagenet-200"
    monkeypatch.setenv("IMG2IMG_DATA", str(tmp_path / "datasets"))
    assert find_tiny_imagenet() == tmp_path / "datasets" / "tiny-imagenet-200"
    monkeypatch.delenv("IMG2IMG_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "img2img"


def test_tiny_imagenet_by_name(
    mini_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMG2IMG_DATA", str(tmp_path / "datasets"))
    with pytest.raises(FileNotFoundError, match="img2img data download tiny-imagenet"):
        load_filtered_dataset(data="tiny-imagenet")
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "tiny-imagenet-200").symlink_to(mini_root, target_is_directory=True)
    train, val = load_filtered_dataset(data="tiny-imagenet", limit=20, seed=1)
    assert (len(train), len(val)) == (20, 5)
    assert train.source.startswith("tiny-imagenet:")
    assert set(train.labels[train.indices].tolist()) <= set(range(10))


# -- the loader on the mini set ----------------------------------------------------------------------


def test_mini_split(mini_split: tuple[FilteredDataset, FilteredDataset], mini_root: Path) -> None:
    train, val = mini_split
    assert (len(train), len(val)) == (5000, 500)
    assert train.images is val.images  # one array, two index sets
    assert isinstance(train.images, np.memmap) and train.images.dtype == np.uint8
    _no_shared_groups(train, val)
    x, y = train[0]
    assert x.shape == (3, 64, 64) and y.shape == (1, 64, 64)
    assert x.dtype == torch.float32 and y.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert train.filter.spec == "study-sobel"
    # the rows are the files, in order: compare some against a direct read
    reference = TinyImageNet(mini_root, "val")
    for position in (0, 77, 499):
        expected = read_image(reference.paths[position]).transpose(2, 0, 1)
        np.testing.assert_array_equal(val.uint8([position])[0], expected)
        assert val.labels[val.indices[position]] == reference.labels[position]


def test_mini_split_is_deterministic_and_cached(
    mini_split: tuple[FilteredDataset, FilteredDataset],
    mini_root: Path,
    mini_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IMG2IMG_CACHE", str(mini_cache))
    monkeypatch.setattr(cache_module, "_decode_chunk", _must_not_decode)
    train, val = load_filtered_dataset(data=str(mini_root))
    np.testing.assert_array_equal(train.indices, mini_split[0].indices)
    np.testing.assert_array_equal(val.indices, mini_split[1].indices)
    np.testing.assert_array_equal(train.uint8([0, 4999]), mini_split[0].uint8([0, 4999]))


def _must_not_decode(*args: object) -> None:
    raise AssertionError("decoded although the cache should have answered")


def test_study_sobel_target_matches_opencv(
    mini_split: tuple[FilteredDataset, FilteredDataset],
) -> None:
    _, val = mini_split
    positions = np.arange(0, 500, 25)
    _, targets = val.batch(positions)
    photos = val.uint8(positions).transpose(0, 2, 3, 1)
    for photo, target in zip(photos, targets, strict=True):
        expected = _opencv_study_sobel(photo)
        assert np.abs(target[0].numpy() - expected).max() <= TOLERANCE
    assert float(targets.abs().max()) > 0.1  # real edges, not an empty comparison


def test_random_target_matches_filter2d(
    mini_root: Path, mini_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMG2IMG_CACHE", str(mini_cache))
    train, _ = load_filtered_dataset(True, data=mini_root, seed=7)
    assert train.filter.spec == "study-random:seed=7"
    kernel = np.random.default_rng(7).random((3, 3)).astype(np.float32)
    positions = np.arange(0, 5000, 500)
    _, targets = train.batch(positions)
    for photo, target in zip(train.uint8(positions).transpose(0, 2, 3, 1), targets, strict=True):
        gray = cv2.cvtColor(photo.astype(np.float32) / np.float32(255.0), cv2.COLOR_RGB2GRAY)
        expected = cv2.filter2D(gray, cv2.CV_32F, kernel)
        assert np.abs(target[0].numpy() - expected).max() <= TOLERANCE
    again, _ = load_filtered_dataset(True, data=mini_root, seed=7)
    other, _ = load_filtered_dataset(True, data=mini_root, seed=8)
    assert torch.equal(again.filter.kernel, train.filter.kernel)
    assert not torch.equal(other.filter.kernel, train.filter.kernel)


def test_limit_decodes_only_what_is_needed(mini_root: Path) -> None:
    train, val = load_filtered_dataset(data=mini_root, limit=40, seed=3)
    assert (len(train), len(val)) == (40, 10)
    assert len(train.images) == 50  # only the chosen files were decoded
    _no_shared_groups(train, val)
    again, _ = load_filtered_dataset(data=mini_root, limit=40, seed=3)
    np.testing.assert_array_equal(again.uint8(range(40)), train.uint8(range(40)))
    no_val_train, no_val = load_filtered_dataset(data=mini_root, limit=8, val_fraction=0.0)
    assert (len(no_val_train), len(no_val)) == (8, 0)


def test_smaller_crops_of_tiny_imagenet(mini_root: Path, notices) -> None:
    train, val = load_filtered_dataset(data=mini_root, crop_size=32, limit=16)
    assert train.image_size == (32, 32)
    assert len(train) == 16
    _no_shared_groups(train, val)
    with pytest.raises(ValueError, match="crop"), notices("smaller"):
        load_filtered_dataset(data=mini_root, crop_size=80, limit=4)


# -- the built-in samples ----------------------------------------------------------------------------


def test_load_samples() -> None:
    samples = load_samples()
    images, groups, names = samples
    assert images.shape == (1076, 3, 64, 64) and images.dtype == np.uint8
    assert groups.shape == (1076,) and groups.dtype == np.int64
    assert names == SAMPLE_NAMES and len(names) == 19 and "cat" not in names
    assert np.all(np.diff(groups) >= 0) and set(groups.tolist()) == set(range(19))
    camera = images[groups == names.index("camera")]
    assert np.array_equal(camera[:, 0], camera[:, 1]) and np.array_equal(camera[:, 0], camera[:, 2])
    astronaut = images[groups == names.index("astronaut")]
    assert not np.array_equal(astronaut[:, 0], astronaut[:, 1])
    assert np.array_equal(load_samples().images, images)
    assert len(load_samples(crop_size=32, stride=32, max_side=64).images) > 0
    with pytest.raises(ValueError, match="max_side"):
        load_samples(crop_size=64, max_side=32)
    with pytest.raises(TypeError, match="crop_size"):
        load_samples(crop_size=64.0)


def test_samples_split() -> None:
    train, val = load_filtered_dataset()
    assert len(train) + len(val) == 1076 and len(val) > 0
    _no_shared_groups(train, val)
    x, y = val[0]
    assert x.shape == (3, 64, 64) and y.shape == (1, 64, 64) and y.dtype == torch.float32
    again, again_val = load_filtered_dataset()
    np.testing.assert_array_equal(again.indices, train.indices)
    np.testing.assert_array_equal(again_val.indices, val.indices)
    other, _ = load_filtered_dataset(seed=1)
    assert not np.array_equal(other.indices, train.indices)
    limited, limited_val = load_filtered_dataset(limit=100)
    assert (len(limited), len(limited_val)) == (100, 25)
    gray, _ = load_filtered_dataset(filter="gray")
    assert gray[0][1].shape == (1, 64, 64)
    rgb, _ = load_filtered_dataset(filter="gaussian:ksize=5,channels=rgb")
    assert rgb[0][1].shape == (3, 64, 64)


def test_samples_sobel_target_matches_opencv() -> None:
    train, _ = load_filtered_dataset()
    positions = np.arange(0, len(train), 40)
    _, targets = train.batch(positions)
    for photo, target in zip(train.uint8(positions).transpose(0, 2, 3, 1), targets, strict=True):
        assert np.abs(target[0].numpy() - _opencv_study_sobel(photo)).max() <= TOLERANCE


# -- crops and splits --------------------------------------------------------------------------------


def test_crops() -> None:
    assert grid_positions(100, 70, 32, 32) == [(y, x) for y in (0, 32, 64) for x in (0, 32)]
    image = np.arange(70 * 100 * 3, dtype=np.uint32).astype(np.uint8).reshape(70, 100, 3)
    crops = grid_crops(image, 32, 16)
    assert crops.shape == (3 * 5, 3, 32, 32)
    np.testing.assert_array_equal(crops[1], image[0:32, 16:48].transpose(2, 0, 1))
    assert grid_crops(image[:10], 32, 32).shape == (0, 3, 32, 32)
    assert resize_shorter(image, 35).shape == (35, 50, 3)
    assert resize_shorter(image, 200) is image


def test_split_by_group() -> None:
    groups = np.repeat(np.arange(10), 3)
    train, val = split_by_group(groups, 0.2, seed=0)
    assert len(val) == 6 and len(train) == 24
    assert not set(groups[train]) & set(groups[val])
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(30))
    again = split_by_group(groups, 0.2, seed=0)
    assert np.array_equal(again[1], val)
    assert len(split_by_group(np.array([0, 0, 1]), 0.01)[1]) > 0  # two groups: val not empty
    assert len(split_by_group(np.array([0, 1]), 0.9)[0]) > 0  # and train neither
    assert len(split_by_group(np.array([5, 5, 5]), 0.5)[1]) == 0  # one group: all train
    assert len(split_by_group(groups, 0.0)[1]) == 0
    with pytest.raises(ValueError, match="val_fraction"):
        split_by_group(groups, 1.0)
    with pytest.raises(TypeError, match="val_fraction"):
        split_by_group(groups, "0.2")


# -- folders of images -------------------------------------------------------------------------------


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    """Six readable photos (nested, mixed formats), a truncated JPEG, a text file and a tiny image."""
    from skimage import data

    folder = tmp_path / "photos"
    (folder / "nested" / "deeper").mkdir(parents=True)
    sources = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    names = ["a.png", "nested/b.jpg", "nested/deeper/c.PNG", "d.webp", "e.bmp", "nested/f.tif"]
    for index, name in enumerate(names):
        photo = sources[index % 4][index * 7 : index * 7 + 150, index * 5 : index * 5 + 130]
        Image.fromarray(np.ascontiguousarray(photo)).save(folder / name)
    Image.fromarray(data.astronaut()[:150, :150]).save(folder / "full.jpg", quality=90)
    whole = (folder / "full.jpg").read_bytes()
    (folder / "full.jpg").unlink()
    (folder / "broken.jpg").write_bytes(whole[: len(whole) // 2])
    (folder / "notes.png").write_text("not an image")
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(folder / "nested" / "tiny.png")
    (folder / "readme.txt").write_text("ignored: not an image extension")
    return folder


def test_folder_skips_bad_files_and_reports_them(photo_folder: Path, notices) -> None:
    with notices("skipped 3 of 9") as record:
        decoded = load_image_folder(photo_folder)
    assert len(record) == 1
    skipped = {
        path.relative_to(photo_folder).as_posix(): reason for path, reason in decoded.skipped
    }
    assert set(skipped) == {"broken.jpg", "notes.png", "nested/tiny.png"}
    assert "truncated" in skipped["broken.jpg"]
    assert "smaller than one 64x64 crop" in skipped["nested/tiny.png"]
    for name in skipped:
        assert str(photo_folder / name) in record[0].getMessage()
    assert decoded.images.shape == (6 * 4, 3, 64, 64)  # 150x130 -> a 2x2 grid each
    assert np.bincount(decoded.groups, minlength=9).tolist() == [4, 0, 4, 4, 4, 4, 4, 0, 0]


def test_folder_as_data_source(photo_folder: Path, notices) -> None:
    with notices("skipped 3"):
        train, val = load_filtered_dataset(data=photo_folder, val_fraction=0.4, seed=2)
    assert len(val) > 0 and len(train) > 0 and len(train) + len(val) == 24
    _no_shared_groups(train, val)
    assert train.source == f"folder:{photo_folder}"
    assert train[0][0].shape == (3, 64, 64)
    with notices("skipped"):
        small, small_val = load_filtered_dataset(data=photo_folder, crop_size=32, limit=5)
    assert len(small) == 5 and len(small_val) <= 2 and small.image_size == (32, 32)


# -- the decode cache --------------------------------------------------------------------------------


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    from skimage import data

    folder = tmp_path / "files"
    folder.mkdir()
    paths = []
    for index, photo in enumerate([data.astronaut(), data.coffee(), data.chelsea()]):
        path = folder / f"{index}.png"
        Image.fromarray(np.ascontiguousarray(photo[:96, :128])).save(path)
        paths.append(path)
    return paths


def test_cache_hit_does_not_decode(
    files: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = decode_images(files)
    assert not first.cached and first.images.shape == (3 * 2, 3, 64, 64)
    entry = first.cache_file
    assert entry is not None and entry.parent == tmp_path / "cache" / "decoded"
    assert entry.with_suffix(".json").is_file()
    monkeypatch.setattr(cache_module, "_decode_chunk", _must_not_decode)
    second = decode_images(files)
    assert second.cached and isinstance(second.images, np.memmap)
    np.testing.assert_array_equal(second.images, first.images)
    np.testing.assert_array_equal(second.groups, first.groups)
    assert sorted(p.name for p in entry.parent.iterdir()) == sorted(
        [entry.name, entry.stem + ".json"]
    )


def test_cache_key_follows_files_and_parameters(files: list[Path]) -> None:
    first = decode_images(files)
    assert decode_images(files, crop_size=32).cache_file != first.cache_file
    assert decode_images(files[::-1]).cache_file != first.cache_file
    stat = files[1].stat()
    os.utime(files[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touch
    touched = decode_images(files)
    assert not touched.cached and touched.cache_file != first.cache_file
    Image.fromarray(np.full((96, 128, 3), 200, np.uint8)).save(files[1])  # new content
    changed = decode_images(files)
    assert not changed.cached
    assert (np.asarray(changed.images[changed.groups == 1]) == 200).all()
    np.testing.assert_array_equal(
        changed.images[changed.groups == 0], first.images[first.groups == 0]
    )


def _damage_truncate(npy: Path) -> None:
    npy.write_bytes(npy.read_bytes()[:-100])


def _damage_header(npy: Path) -> None:
    data = bytearray(npy.read_bytes())
    data[:6] = b"GARBAG"
    npy.write_bytes(bytes(data))


def _damage_foreign(npy: Path) -> None:
    size = npy.stat().st_size
    with npy.open("wb") as file:
        np.save(file, np.zeros(size // 4, dtype=np.float32))


def _damage_version(npy: Path) -> None:
    sidecar = npy.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    meta["format"] = -1
    sidecar.write_text(json.dumps(meta))


def _damage_sidecar(npy: Path) -> None:
    npy.with_suffix(".json").write_text("{ not json")


def _damage_shape(npy: Path) -> None:
    sidecar = npy.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    meta["shape"] = [meta["shape"][0] * 2, 3, 32, 32]
    sidecar.write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "damage",
    [
        _damage_truncate,
        _damage_header,
        _damage_foreign,
        _damage_version,
        _damage_sidecar,
        _damage_shape,
    ],
)
def test_damaged_cache_is_rebuilt(files: list[Path], damage, notices, caplog) -> None:
    first = decode_images(files)
    expected = np.array(first.images)
    del first.images  # release the memory map before damaging the file
    damage(first.cache_file)
    with notices("unusable"):
        rebuilt = decode_images(files)
    assert not rebuilt.cached
    np.testing.assert_array_equal(rebuilt.images, expected)
    caplog.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert decode_images(files).cached
    assert not caplog.records  # the rebuilt entry is used without a notice


def test_no_cache_writes_nothing(files: list[Path], tmp_path: Path) -> None:
    decoded = decode_images(files, cache=False)
    assert decoded.cache_file is None and len(decoded.images) == 6
    assert not (tmp_path / "cache").exists()


def test_parallel_decoding_matches_serial(
    files: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    many = files * 6
    serial = decode_images(many, cache=False, workers=1)
    monkeypatch.setattr(cache_module, "_PARALLEL_MIN", 1)
    pooled = decode_images(many, cache=False, workers=2)
    np.testing.assert_array_equal(pooled.images, serial.images)
    np.testing.assert_array_equal(pooled.groups, serial.groups)


# -- arguments ---------------------------------------------------------------------------------------


def test_loader_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"data must be one of \['samples', 'tiny-imagenet'\].*'imagenet'"
    ):
        load_filtered_dataset(data="imagenet")
    with pytest.raises(TypeError, match="data"):
        load_filtered_dataset(data=3)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_filtered_dataset(data=tmp_path / "absent")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(ValueError, match="not a folder"):
        load_filtered_dataset(data=tmp_path / "file.png")
    with pytest.raises(ValueError, match="val_fraction"):
        load_filtered_dataset(val_fraction=1.5)
    with pytest.raises(ValueError, match="limit"):
        load_filtered_dataset(limit=0)
    with pytest.raises(TypeError, match="limit"):
        load_filtered_dataset(limit="10")
    with pytest.raises(TypeError, match="randomize"):
        load_filtered_dataset("yes")
    with pytest.raises(ValueError, match="no-such-filter"):
        load_filtered_dataset(filter="no-such-filter")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image files"):
        load_filtered_dataset(data=tmp_path / "empty")


def test_public_names() -> None:
    for name in data_api.__all__:
        assert getattr(data_api, name) is not None
    assert data_api.read_image is read_image
    with pytest.raises(AttributeError):
        _ = data_api.no_such_name


def test_streamed_folder_with_a_limit_and_no_validation_share_validates_on_its_files(
    tmp_path,
) -> None:
    from PIL import Image
    from skimage import data as samples

    photo = samples.astronaut()
    for index in range(6):
        Image.fromarray(photo[index * 20 : index * 20 + 80, :90]).save(tmp_path / f"{index}.png")
    whole_train, whole_val = load_filtered_dataset(
        data=str(tmp_path), stream=True, val_fraction=0.0, crop_size=32
    )
    assert whole_val.paths == whole_train.paths  # no share held out: the training files
    train, val = load_filtered_dataset(
        data=str(tmp_path), stream=True, limit=3, val_fraction=0.0, crop_size=32
    )
    assert len(train.paths) == 3 and val.paths == train.paths and len(val) > 0
    train, val = load_filtered_dataset(
        data=str(tmp_path), stream=True, limit=3, val_fraction=0.5, crop_size=32
    )
    assert len(train.paths) == 3 and not set(val.paths) & set(train.paths)
