"""Hostile and broken image files, generated here, through every entry point that reads images.

Each file is either read correctly or refused with a one-line error naming the file:

* :func:`img2img_filters.imageio.read_image`;
* :func:`img2img_filters.infer.apply_filter` given the path (two models: the folded OpenCV
  path of a ``linear`` model and the network path of the ``study`` model);
* ``img2img apply MODEL FILE -o OUT`` (:func:`img2img_filters.cli.main`): exit 0 and the
  output written, or exit 1 with one line on stderr that names the file;
* the folder loaders :func:`img2img_filters.data.load_image_folder` and
  :func:`img2img_filters.data.load_filtered_dataset`: the good files load, the bad ones are
  reported (with the same reason), cached or not;
* ``img2img apply MODEL DIR -o OUT``: the summary lists every failure, the exit code is 1.

The cases (see :data:`CASES`), 24 in all. Refused (13): zero bytes, truncated JPEG,
truncated PNG, text named .png, an HTML page named .jpg, a truncated GIF named .png, a
PNG with a zero side, two decompression bombs (headers claiming 10^10 and 2x10^8
pixels), two PNG chunk bombs (a text and an ICC profile chunk that inflate to 200 MB),
a FIFO and a link to /dev/zero (files that never end). Read (11): 1x1, 1xN, Nx1, 16-bit
RGB and gray PNG, RGBA, LA, palette with transparency, CMYK JPEG, EXIF-rotated JPEG
(orientation 6: turned clockwise, as OpenCV does) and a two-frame GIF named .png (read
by content; the first frame). The folder loaders list files by extension
(``IMAGE_EXTENSIONS``, which has no ``.gif``), so the GIFs are named .png.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from img2img_filters.checkpoint import save_model
from img2img_filters.cli import main
from img2img_filters.data import load_filtered_dataset, load_image_folder
from img2img_filters.imageio import MAX_PIXELS, ImageReadError, read_image
from img2img_filters.infer import apply_filter
from img2img_filters.models import create_img2img_model
from pngs import png_chunk, png_header_only

pytestmark = pytest.mark.timeout(120)  # a reader that opened the FIFO would block forever

HEIGHT, WIDTH = 40, 48  # the size of every readable photo but the tiny ones
CROP = 16


def _photo(seed: int = 0) -> np.ndarray:
    """A smooth, JPEG-friendly uint8 ``(40, 48, 3)`` RGB test picture with some texture."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    rng = np.random.default_rng(seed)
    channels = [
        128 + 100 * np.sin(x / 7 + seed) * np.cos(y / 5),
        128 + 90 * np.cos((x + y) / 9),
        64 + 3 * x + rng.normal(0, 4, x.shape),
    ]
    return np.clip(np.dstack(channels), 0, 255).astype(np.uint8)


def _encoded(photo: np.ndarray, suffix: str, **options) -> bytes:
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"img2img-hostile-{os.getpid()}{suffix}"
    try:
        Image.fromarray(photo).save(path, **options)
        return path.read_bytes()
    finally:
        path.unlink(missing_ok=True)


# -- the cases -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One file: how to make it, and what reading it must give.

    Attributes:
        name: The file name (its extension is what the loaders go by).
        make: Writes the file at the given path and returns the expected decoded array
            (uint8 or, for 16-bit files, uint16 ``(H, W, 3)`` RGB), or ``None`` when
            the file must be refused.
        error: For a refused file: words its one-line error must hold.
        tolerance: For a lossy file: the largest difference from the expected array.
    """

    name: str
    make: Callable[[Path], np.ndarray | None]
    error: str = ""
    tolerance: int = 0


def _write(data: bytes) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        path.write_bytes(data)

    return make


def _truncated(suffix: str) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        data = _encoded(_photo(1), suffix, **({"quality": 90} if suffix == ".jpg" else {}))
        path.write_bytes(data[: len(data) // 2])

    return make


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _dev_zero(path: Path) -> None:
    path.symlink_to("/dev/zero")


def _saved(
    array: np.ndarray, expected: np.ndarray | None = None, mode: str | None = None, **options
):
    def make(path: Path) -> np.ndarray:
        Image.fromarray(array, mode=mode).save(path, **options)
        return array if expected is None else expected

    return make


def _tiny(shape: tuple[int, int]) -> Callable[[Path], np.ndarray]:
    array = np.arange(shape[0] * shape[1] * 3, dtype=np.uint8).reshape(*shape, 3) * 3
    return _saved(array)


def _deep_rgb(path: Path) -> np.ndarray:
    values = _photo(2).astype(np.uint16) * 257 + np.arange(WIDTH, dtype=np.uint16)[None, :, None]
    assert cv2.imwrite(str(path), values[..., ::-1])
    return values


def _deep_gray(path: Path) -> np.ndarray:
    values = (np.arange(HEIGHT * WIDTH, dtype=np.uint32).reshape(HEIGHT, WIDTH) * 31).astype(
        np.uint16
    )
    assert cv2.imwrite(str(path), values)
    return np.dstack([values] * 3)


def _rgba(path: Path) -> np.ndarray:
    photo = _photo(3)
    alpha = np.tile(np.linspace(0, 255, WIDTH).astype(np.uint8), (HEIGHT, 1))
    Image.fromarray(np.dstack([photo, alpha]), mode="RGBA").save(path)
    return photo  # alpha dropped, colours kept as stored


def _gray_alpha(path: Path) -> np.ndarray:
    gray = _photo(4)[..., 0]
    Image.fromarray(np.dstack([gray, 255 - gray]), mode="LA").save(path)
    return np.dstack([gray] * 3)


def _palette(path: Path) -> np.ndarray:
    quantized = Image.fromarray(_photo(5)).quantize(colors=12)
    quantized.save(path, transparency=0)
    return np.asarray(quantized.convert("RGB"))


def _cmyk(path: Path) -> np.ndarray:
    photo = _photo(6)
    Image.fromarray(photo).convert("CMYK").save(path, quality=100)
    assert Image.open(path).mode == "CMYK"
    return photo


def _exif_rotated(path: Path) -> np.ndarray:
    photo = _photo(7)
    image = Image.fromarray(photo)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    image.save(path, exif=exif, quality=95)
    with Image.open(path) as stored:  # the pixels as stored, orientation not applied
        pixels = np.asarray(stored.convert("RGB"))
    assert pixels.shape == photo.shape and np.abs(pixels.astype(int) - photo).mean() < 3
    return np.ascontiguousarray(np.rot90(pixels, k=-1))  # upright: (48, 40, 3)


def _animated(path: Path) -> np.ndarray:
    first = _photo(8)
    frames = [
        Image.fromarray(first).quantize(colors=256),
        Image.fromarray(_photo(9)).quantize(colors=256),
    ]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    return np.asarray(frames[0].convert("RGB"))


def _chunk_bomb(kind: bytes) -> Callable[[Path], None]:
    """A valid 8x8 PNG with an extra ancillary chunk that inflates to 200 MB (194 KB stored)."""

    def make(path: Path) -> None:
        data = _encoded(np.zeros((8, 8, 3), np.uint8), ".png")
        inflating = zlib.compress(b"\0" * 200_000_000, 9)
        payload = {b"zTXt": b"Comment\0\0", b"iCCP": b"profile\0\0"}[kind] + inflating
        path.write_bytes(data[:33] + png_chunk(kind, payload) + data[33:])  # right after IHDR

    return make


def _truncated_gif(path: Path) -> None:
    _animated(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 3 // 10])  # inside the first frame


CASES: list[Case] = [
    # refused
    Case("zero-bytes.png", _write(b""), "empty"),
    Case("truncated.jpg", _truncated(".jpg"), "truncated"),
    Case("truncated.png", _truncated(".png"), "truncated"),
    Case("text.png", _write(b"these are not pixels\n" * 20), "not a recognised image"),
    Case("html.jpg", _write(b"<!DOCTYPE html><html><body>404</body></html>\n"), "not a recognised"),
    Case("zero-width.png", _write(png_header_only(0, 10)), "zero dimension"),
    # 10^10 pixels claimed: beyond Pillow's own hard limit.
    Case(
        "bomb.png", _write(png_header_only(100_000, 100_000)), "more than the limit of 178,956,970"
    ),
    # 2 * 10^8 pixels claimed: just over the default limit.
    Case("bomb-over-limit.png", _write(png_header_only(20_000, 10_000)), "more than the limit"),
    Case("truncated-gif-named.png", _truncated_gif, "truncated"),
    Case("text-chunk-bomb.png", _chunk_bomb(b"zTXt"), "Decompressed data too large"),
    Case("icc-profile-bomb.png", _chunk_bomb(b"iCCP"), "Decompressed data too large"),
    Case("fifo.png", _fifo, "not a regular file"),
    Case("dev-zero.png", _dev_zero, "not a regular file"),
    # read
    Case("one-pixel.png", _tiny((1, 1))),
    Case("one-row.png", _tiny((1, 37))),
    Case("one-column.png", _tiny((37, 1))),
    Case("deep-rgb.png", _deep_rgb),
    Case("deep-gray.png", _deep_gray),
    Case("rgba.png", _rgba),
    Case("gray-alpha.png", _gray_alpha),
    Case("palette.png", _palette),
    Case("cmyk.jpg", _cmyk, tolerance=10),
    Case("exif-rotated.jpg", _exif_rotated),
    Case("animated-gif-named.png", _animated),
]
REFUSED = [case for case in CASES if case.error]
READ = [case for case in CASES if not case.error]


def test_the_cases() -> None:
    assert (len(REFUSED), len(READ)) == (13, 11)
    assert MAX_PIXELS < 20_000 * 10_000  # the second bomb is over img2img's own limit
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray | None]]:
    """A folder holding every case, and the expected array of each readable one."""
    folder = tmp_path_factory.mktemp("hostile")
    expected = {case.name: case.make(folder / case.name) for case in CASES}
    for case in REFUSED:
        assert expected[case.name] is None, case.name
    return folder, expected


@pytest.fixture(scope="module", params=["linear", "study"])
def model_file(request, tmp_path_factory) -> Path:
    """A saved model: ``linear`` (folded into one OpenCV filter) or ``study`` (the network)."""
    import torch

    torch.manual_seed(0)
    model = create_img2img_model(3, 1, request.param)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    path = tmp_path_factory.mktemp("model") / f"{request.param}.safetensors"
    return save_model(model, path, filter="study-sobel")


def _assert_one_line_naming(message: str, path: Path, words: str) -> None:
    assert "\n" not in message.rstrip("\n"), message
    assert str(path) in message, message
    assert words in message, message


# -- read_image and apply_filter -------------------------------------------------------------------


@pytest.mark.parametrize("case", REFUSED, ids=lambda c: c.name)
def test_read_image_refuses(hostile, case: Case) -> None:
    folder, _ = hostile
    with pytest.raises(ImageReadError) as excinfo:
        read_image(folder / case.name)
    _assert_one_line_naming(str(excinfo.value), folder / case.name, case.error)


@pytest.mark.parametrize("case", READ, ids=lambda c: c.name)
def test_read_image_reads(hostile, case: Case) -> None:
    folder, expected = hostile
    path, want = folder / case.name, expected[case.name]
    image = read_image(path, keep_16bit=True)
    assert image.shape == want.shape and image.dtype == want.dtype
    assert np.abs(image.astype(np.int64) - want).max() <= case.tolerance
    if want.dtype == np.uint16:  # the 8-bit reading: round(v / 257)
        np.testing.assert_array_equal(read_image(path), np.round(want / 257).astype(np.uint8))


@pytest.mark.parametrize("case", REFUSED, ids=lambda c: c.name)
def test_apply_filter_refuses(hostile, model_file: Path, case: Case) -> None:
    from img2img_filters.checkpoint import load_model

    folder, _ = hostile
    with pytest.raises(ImageReadError) as excinfo:
        apply_filter(folder / case.name, load_model(model_file), device="cpu")
    _assert_one_line_naming(str(excinfo.value), folder / case.name, case.error)


@pytest.mark.parametrize("case", READ, ids=lambda c: c.name)
def test_apply_filter_reads(hostile, model_file: Path, case: Case) -> None:
    from img2img_filters.checkpoint import load_model

    folder, _ = hostile
    path = folder / case.name
    model = load_model(model_file)
    result = apply_filter(path, model, device="cpu")
    decoded = read_image(path, keep_16bit=True)
    assert result.shape == decoded.shape[:2] and result.dtype == np.float32
    assert np.isfinite(result).all()
    np.testing.assert_array_equal(result, apply_filter(decoded, model, device="cpu"))


# -- img2img apply FILE ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_cli_apply_one_file(hostile, model_file: Path, case: Case, tmp_path: Path, capsys) -> None:
    from img2img_filters.checkpoint import load_model

    folder, _ = hostile
    path, output = folder / case.name, tmp_path / "out.npy"
    code = main(["apply", str(model_file), str(path), "-o", str(output), "--device", "cpu"])
    captured = capsys.readouterr()
    if case.error:
        assert code == 1
        assert captured.err.startswith("img2img: error: ") and captured.err.count("\n") == 1
        _assert_one_line_naming(captured.err, path, case.error)
        assert "Traceback" not in captured.err
        assert not output.exists()
    else:
        assert code == 0, captured.err
        expected = apply_filter(path, load_model(model_file), device="cpu")
        np.testing.assert_array_equal(np.load(output), expected)


def test_cli_apply_honours_the_pixel_limit(
    hostile, model_file: Path, tmp_path, capsys, monkeypatch
) -> None:
    """The limit from --max-pixels and from IMG2IMG_MAX_PIXELS: a readable photo over it is refused."""
    folder, _ = hostile
    path = folder / "rgba.png"
    argv = ["apply", str(model_file), str(path), "-o", str(tmp_path / "out.npy"), "--device", "cpu"]
    assert main([*argv, "--max-pixels", str(HEIGHT * WIDTH - 1)]) == 1
    _assert_one_line_naming(capsys.readouterr().err, path, "more than the limit of 1,919")
    monkeypatch.setenv("IMG2IMG_MAX_PIXELS", "100")
    assert main(argv) == 1
    _assert_one_line_naming(capsys.readouterr().err, path, "more than the limit of 100")
    assert main([*argv, "--max-pixels", str(HEIGHT * WIDTH)]) == 0  # the flag wins
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_a_raised_limit_is_the_one_in_force(tmp_path: Path, monkeypatch) -> None:
    """``max_pixels`` above Pillow's own bound (twice ``Image.MAX_IMAGE_PIXELS``) really raises it.

    Pillow's bound equals the default limit, so raising ``max_pixels`` used to change
    nothing. Shrunk here so that a small photo stands for a huge one.
    """
    from PIL import Image as PillowImage

    path = tmp_path / "photo.png"
    PillowImage.fromarray(_photo()).save(path)
    monkeypatch.setattr(PillowImage, "MAX_IMAGE_PIXELS", 100)  # Pillow alone: at most 200 pixels
    with pytest.raises(ImageReadError) as excinfo:
        read_image(path, max_pixels=HEIGHT * WIDTH - 1)
    _assert_one_line_naming(str(excinfo.value), path, "more than the limit of 1,919")
    np.testing.assert_array_equal(read_image(path, max_pixels=HEIGHT * WIDTH), _photo())
    assert PillowImage.MAX_IMAGE_PIXELS == 100  # restored after the header was read
    monkeypatch.setenv("IMG2IMG_MAX_PIXELS", str(HEIGHT * WIDTH))
    np.testing.assert_array_equal(read_image(path), _photo())


# -- folders ---------------------------------------------------------------------------------------


def _check_folder_result(folder: Path, decoded, expected: dict) -> None:
    skipped = {path.name: reason for path, reason in decoded.skipped}
    tiny = {"one-pixel.png", "one-row.png", "one-column.png"}  # smaller than one crop
    assert set(skipped) == {case.name for case in REFUSED} | tiny
    for case in REFUSED:
        path = folder / case.name
        with pytest.raises(ImageReadError) as excinfo:
            read_image(path)
        assert skipped[case.name] == str(excinfo.value)  # the same one-line reason
    for name in tiny:
        assert f"smaller than one {CROP}x{CROP} crop" in skipped[name]
    counts = np.bincount(decoded.groups, minlength=len(decoded.paths))
    for index, path in enumerate(decoded.paths):
        if path.name in skipped:
            assert counts[index] == 0, path.name
            continue
        image = read_image(path)
        rows, cols = image.shape[0] // CROP, image.shape[1] // CROP
        assert counts[index] == rows * cols, path.name
        first = decoded.images[np.flatnonzero(decoded.groups == index)[0]]
        np.testing.assert_array_equal(first, image[:CROP, :CROP].transpose(2, 0, 1))


@pytest.mark.parametrize("cache", [False, True])
def test_load_image_folder_skips_and_reports(
    hostile, cache: bool, tmp_path: Path, monkeypatch, notices
) -> None:
    folder, expected = hostile
    monkeypatch.setenv("IMG2IMG_CACHE", str(tmp_path / "cache"))
    runs = 2 if cache else 1  # the second run comes from the cache and must report the same files
    for run in range(runs):
        with notices("skipped") as caught:
            decoded = load_image_folder(folder, crop_size=CROP, cache=cache)
        assert decoded.cached == (cache and run == 1)
        messages = [record.getMessage() for record in caught]
        assert len(messages) == 1
        assert f"skipped {len(REFUSED) + 3} of {len(CASES)} image files" in messages[0]
        _check_folder_result(folder, decoded, expected)


def test_load_filtered_dataset_from_a_hostile_folder(
    hostile, tmp_path: Path, monkeypatch, notices
) -> None:
    folder, _ = hostile
    monkeypatch.setenv("IMG2IMG_CACHE", str(tmp_path / "cache"))
    with notices(f"skipped {len(REFUSED) + 3} of {len(CASES)}") as record:
        train, val = load_filtered_dataset(data=folder, crop_size=CROP, val_fraction=0.25, seed=1)
    message = record[0].getMessage()
    named = [case for case in CASES if str(folder / case.name) in message]
    assert len(named) == 10 and message.endswith("; and 6 more")  # the first ten, then a count
    assert all(case.error or case.name.startswith("one-") for case in named)
    readable = len(READ) - 3
    assert len(train) + len(val) == readable * 6  # 40x48 (or 48x40) photos: six 16x16 crops each
    inputs, targets = train.batch(np.arange(len(train)))
    assert inputs.shape == (len(train), 3, CROP, CROP) and targets.shape == (
        len(train),
        1,
        CROP,
        CROP,
    )
    assert bool(inputs.isfinite().all()) and bool(targets.isfinite().all())


def test_load_filtered_dataset_names_every_skipped_file(
    hostile, tmp_path: Path, monkeypatch, notices
) -> None:
    folder, _ = hostile
    monkeypatch.setenv("IMG2IMG_CACHE", str(tmp_path / "cache"))
    with notices("skipped") as record:
        train, _ = load_filtered_dataset(data=folder, crop_size=CROP, cache=False)
    reachable = record[0].getMessage() + repr(getattr(train, "skipped", ""))
    assert all(str(folder / case.name) in reachable for case in REFUSED)


def test_cli_apply_a_hostile_folder(hostile, model_file: Path, tmp_path: Path, capsys) -> None:
    from img2img_filters.checkpoint import load_model

    folder, _ = hostile
    out = tmp_path / "out"
    code = main(
        [
            "apply",
            str(model_file),
            str(folder),
            "-o",
            str(out),
            "--format",
            "npy",
            "--device",
            "cpu",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    summary = captured.out.strip().splitlines()
    assert summary[0].startswith(
        f"done {len(READ)}, skipped 0, failed {len(REFUSED)} of {len(CASES)}"
    )
    failures = [line for line in summary[1:] if line.startswith("  failed: ")]
    assert len(failures) == len(REFUSED) == len(summary) - 1
    for case in REFUSED:
        (line,) = [
            f for f in failures if f"{folder / case.name}'" in f or f"{folder / case.name}:" in f
        ]
        assert case.error in line
    # Each failure is also reported on stderr as it happens, one line each.
    errors = captured.err.strip().splitlines()
    assert len(errors) == len(REFUSED)
    for case in REFUSED:
        assert sum(str(folder / case.name) in line for line in errors) == 1
    assert sorted(p.name for p in out.iterdir()) == sorted(Path(c.name).stem + ".npy" for c in READ)
    model = load_model(model_file)
    for case in READ:
        expected = apply_filter(folder / case.name, model, device="cpu")
        np.testing.assert_array_equal(np.load(out / (Path(case.name).stem + ".npy")), expected)
    # A second run skips what is done and still reports the same failures.
    assert main(["apply", str(model_file), str(folder), "-o", str(out), "--format", "npy"]) == 1
    again = capsys.readouterr().out.strip().splitlines()[0]
    assert again.startswith(f"done 0, skipped {len(READ)}, failed {len(REFUSED)}")
