"""Reading hostile and unusual image files, writing images, listing folders."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from img2img_filters.imageio import (
    MAX_PIXELS,
    ImageReadError,
    list_images,
    max_pixels_limit,
    read_image,
    write_image,
)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A real photo, uint8 (48, 64, 3) RGB."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[100:148, 150:214])


def _png_bytes(width: int, height: int, idat: bytes = b"", color_type: int = 2) -> bytes:
    """A PNG with any header, valid CRCs, and the given raw IDAT payload (compressed here)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + payload))
        return struct.pack(">I", len(payload)) + kind + payload + crc

    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(idat))
        + chunk(b"IEND", b"")
    )


def _one_line_error(excinfo: pytest.ExceptionInfo, path: Path, *words: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    assert str(path) in message
    for word in words:
        assert word in message.lower(), message
    return message


# -- conversions ---------------------------------------------------------------------------------


def test_rgb_png_round_trip(tmp_path: Path, photo: np.ndarray) -> None:
    path = tmp_path / "rgb.png"
    Image.fromarray(photo).save(path)
    image = read_image(path)
    assert image.dtype == np.uint8 and image.shape == (48, 64, 3)
    np.testing.assert_array_equal(image, photo)


def test_grayscale_is_replicated(tmp_path: Path, photo: np.ndarray) -> None:
    gray = photo[..., 1].copy()
    path = tmp_path / "gray.png"
    Image.fromarray(gray, mode="L").save(path)
    image = read_image(path)
    assert image.shape == (48, 64, 3)
    for channel in range(3):
        np.testing.assert_array_equal(image[..., channel], gray)


def test_one_bit_image(tmp_path: Path) -> None:
    bits = np.zeros((8, 12), dtype=bool)
    bits[2:5, 3:9] = True
    path = tmp_path / "bits.png"
    Image.fromarray(bits).save(path)
    image = read_image(path)
    np.testing.assert_array_equal(image[..., 0], np.where(bits, 255, 0))


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_dropped(tmp_path: Path, photo: np.ndarray, mode: str) -> None:
    alpha = np.zeros(photo.shape[:2], dtype=np.uint8)  # fully transparent: colours kept anyway
    alpha[:, 32:] = 255
    if mode == "RGBA":
        array, expected = np.dstack([photo, alpha]), photo
    else:
        gray = photo[..., 0]
        array, expected = np.dstack([gray, alpha]), np.dstack([gray] * 3)
    path = tmp_path / f"{mode}.png"
    Image.fromarray(array, mode=mode).save(path)
    np.testing.assert_array_equal(read_image(path), expected)


@pytest.mark.parametrize("transparency", [False, True])
def test_palette_is_expanded(tmp_path: Path, photo: np.ndarray, transparency: bool) -> None:
    palette_image = Image.fromarray(photo).quantize(colors=16)
    path = tmp_path / "palette.png"
    if transparency:
        palette_image.save(path, transparency=0)
    else:
        palette_image.save(path)
    assert Image.open(path).mode == "P"
    expected = np.asarray(palette_image.convert("RGB"))
    np.testing.assert_array_equal(read_image(path), expected)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_color(tmp_path: Path, suffix: str) -> None:
    rng = np.random.default_rng(0)
    values = rng.integers(0, 65536, size=(20, 30, 3), dtype=np.uint16)
    values[0, :3] = [0, 65535, 128]  # edges of the rounding
    path = tmp_path / f"deep{suffix}"
    assert cv2.imwrite(str(path), values[..., ::-1])
    kept = read_image(path, keep_16bit=True)
    assert kept.dtype == np.uint16
    np.testing.assert_array_equal(kept, values)
    converted = read_image(path)
    assert converted.dtype == np.uint8
    np.testing.assert_array_equal(converted, np.round(values / 257).astype(np.uint8))


def test_16bit_gray(tmp_path: Path) -> None:
    values = np.arange(600, dtype=np.uint16).reshape(20, 30) * 109
    path = tmp_path / "deep_gray.png"
    assert cv2.imwrite(str(path), values)
    kept = read_image(path, keep_16bit=True)
    assert kept.shape == (20, 30, 3) and kept.dtype == np.uint16
    for channel in range(3):
        np.testing.assert_array_equal(kept[..., channel], values)


def test_keep_16bit_leaves_8bit_files_alone(tmp_path: Path, photo: np.ndarray) -> None:
    path = tmp_path / "eight.png"
    Image.fromarray(photo).save(path)
    assert read_image(path, keep_16bit=True).dtype == np.uint8


def test_cmyk_jpeg(tmp_path: Path, photo: np.ndarray) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(photo).convert("CMYK").save(path, quality=100)
    assert Image.open(path).mode == "CMYK"
    image = read_image(path)
    assert image.shape == photo.shape and image.dtype == np.uint8
    assert np.abs(image.astype(int) - photo).max() <= 8  # JPEG is lossy, the colours are right
    reference = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    assert np.abs(image.astype(int) - reference).max() <= 3


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path: Path, photo: np.ndarray, orientation: int) -> None:
    path = tmp_path / f"rotated{orientation}.jpg"
    image = Image.fromarray(photo)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(path, exif=exif, quality=95)
    result = read_image(path)
    expected_shape = (64, 48, 3) if orientation >= 5 else (48, 64, 3)
    assert result.shape == expected_shape
    reference = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)  # OpenCV applies EXIF too
    np.testing.assert_array_equal(result, reference)


def test_exif_orientation_6_turns_clockwise(tmp_path: Path, photo: np.ndarray) -> None:
    path = tmp_path / "six.png"
    image = Image.fromarray(photo)
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(path, exif=exif)
    np.testing.assert_array_equal(read_image(path), np.rot90(photo, k=-1))


@pytest.mark.parametrize("shape", [(1, 1), (1, 37), (37, 1)])
def test_tiny_images(tmp_path: Path, shape: tuple[int, int]) -> None:
    array = np.arange(np.prod(shape) * 3, dtype=np.uint8).reshape(*shape, 3)
    for suffix in (".png", ".jpg"):
        path = tmp_path / f"tiny{suffix}"
        Image.fromarray(array).save(path)
        image = read_image(path)
        assert image.shape == (*shape, 3)
        if suffix == ".png":
            np.testing.assert_array_equal(image, array)


def test_other_formats(tmp_path: Path, photo: np.ndarray) -> None:
    for suffix in (".bmp", ".webp", ".tiff", ".gif"):
        path = tmp_path / f"photo{suffix}"
        Image.fromarray(photo).save(path, **({"lossless": True} if suffix == ".webp" else {}))
        image = read_image(path)
        assert image.shape == photo.shape and image.dtype == np.uint8
        if suffix != ".gif":  # GIF keeps 256 colours
            np.testing.assert_array_equal(image, photo)


def test_float_samples_are_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "float.tif"
    Image.fromarray(np.ones((4, 5), dtype=np.float32)).save(path)
    with pytest.raises(ImageReadError) as excinfo:
        read_image(path)
    _one_line_error(excinfo, path, "unsupported")


# -- failures -------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.png"
    with pytest.raises(FileNotFoundError) as excinfo:
        read_image(path)
    assert isinstance(excinfo.value, ImageReadError)
    _one_line_error(excinfo, path, "not found")


def test_folder_is_not_an_image(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError) as excinfo:
        read_image(tmp_path)
    _one_line_error(excinfo, tmp_path, "not a regular file")


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageReadError) as excinfo:
        read_image(path)
    _one_line_error(excinfo, path, "empty")


def test_text_named_png(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("these are not pixels\n" * 10)
    with pytest.raises(ImageReadError) as excinfo:
        read_image(path)
    _one_line_error(excinfo, path, "not a recognised image")


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_jpeg(tmp_path: Path, photo: np.ndarray, keep: float) -> None:
    full = tmp_path / "full.jpg"
    Image.fromarray(photo).save(full, quality=90)
    data = full.read_bytes()
    path = tmp_path / "truncated.jpg"
    path.write_bytes(data[: int(len(data) * keep)])
    assert cv2.imread(str(path)) is not None  # OpenCV alone would return gray padding
    with pytest.raises(ImageReadError) as excinfo:
        read_image(path)
    _one_line_error(excinfo, path, "truncated")


@pytest.mark.parametrize("cut", ["half", "no_iend"])
def test_truncated_png(tmp_path: Path, photo: np.ndarray, cut: str) -> None:
    full = tmp_path / "full.png"
    Image.fromarray(photo).save(full)
    data = full.read_bytes()
    path = tmp_path / "truncated.png"
    path.write_bytes(data[: len(data) // 2] if cut == "half" else data[:-12])
    with pytest.raises(ImageReadError) as excinfo:
        read_image(path)
    _one_line_error(excinfo, path, "truncated")


def test_corrupt_png_crc(tmp_path: Path, photo: np.ndarray) -> None:
    full = tmp_path / "full.png"
    Image.fromarray(photo).save(full)
    data = bytearray(full.read_bytes())
    data[-20] ^= 0xFF  # inside the last IDAT chunk
    path = tmp_path / "flipped.png"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageReadError):
        read_image(path)


@pytest.mark.parametrize("size", [(0, 10), (10, 0)])
def test_zero_dimension(tmp_path: Path, size: tuple[int, int]) -> None:
    path = tmp_path / "flat.png"
    path.write_bytes(_png_bytes(*size))
    with pytest.raises(ImageReadError) as excinfo:
        read_image(path)
    _one_line_error(excinfo, path, "zero dimension")


def test_bomb_header_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_bytes(100_000, 100_000))  # 10^10 pixels claimed, a few bytes of data
    with pytest.raises(ImageReadError) as excinfo:
        read_image(path)
    _one_line_error(excinfo, path, "too large")


def test_max_pixels_argument_and_environment(
    tmp_path: Path, photo: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "photo.png"
    Image.fromarray(photo).save(path)
    with pytest.raises(ImageReadError) as excinfo:
        read_image(path, max_pixels=48 * 64 - 1)
    message = _one_line_error(excinfo, path, "pixels", "limit")
    assert "3,072" in message
    assert read_image(path, max_pixels=48 * 64).shape == (48, 64, 3)
    monkeypatch.setenv("IMG2IMG_MAX_PIXELS", "1000")
    assert max_pixels_limit() == 1000
    with pytest.raises(ImageReadError):
        read_image(path)
    assert read_image(path, max_pixels=10_000).shape == (48, 64, 3)  # the argument wins
    monkeypatch.setenv("IMG2IMG_MAX_PIXELS", "lots")
    with pytest.raises(ValueError, match="IMG2IMG_MAX_PIXELS"):
        max_pixels_limit()
    monkeypatch.delenv("IMG2IMG_MAX_PIXELS")
    assert max_pixels_limit() == MAX_PIXELS == 178_956_970
    with pytest.raises(ValueError, match="max_pixels"):
        read_image(path, max_pixels=0)
    with pytest.raises(TypeError, match="max_pixels"):
        read_image(path, max_pixels="many")


def test_large_header_is_checked_before_decoding(tmp_path: Path) -> None:
    """A header under the limit but with no data behind it is truncated, not decoded as gray."""
    path = tmp_path / "hollow.png"
    path.write_bytes(_png_bytes(3000, 3000))
    with pytest.raises(ImageReadError) as excinfo:
        read_image(path)
    _one_line_error(excinfo, path, "truncated")


# -- writing ---------------------------------------------------------------------------------------


def test_write_npy_is_exact(tmp_path: Path) -> None:
    values = np.random.default_rng(1).normal(size=(5, 7, 3)).astype(np.float64)
    path = write_image(tmp_path / "out.npy", values)
    loaded = np.load(path)
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, values.astype(np.float32))


def test_write_png_8bit_scaling(tmp_path: Path) -> None:
    values = np.linspace(-0.5, 1.5, 40 * 3, dtype=np.float32).reshape(8, 5, 3)
    write_image(tmp_path / "out.png", values)
    expected = np.clip(np.rint(values.astype(np.float64) * 255), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(read_image(tmp_path / "out.png"), expected)
    write_image(tmp_path / "range.png", values, value_range=(-0.5, 1.5))
    written = read_image(tmp_path / "range.png")
    assert written.min() == 0 and written.max() == 255


def test_write_png_16bit_round_trip(tmp_path: Path) -> None:
    values = np.random.default_rng(2).random((6, 9, 3))
    path = write_image(tmp_path / "deep.png", values, bit_depth=16)
    expected = np.rint(values * 65535).astype(np.uint16)
    np.testing.assert_array_equal(read_image(path, keep_16bit=True), expected)
    uint8 = (values * 255).astype(np.uint8)
    write_image(tmp_path / "from8.tif", uint8, bit_depth=16)
    np.testing.assert_array_equal(
        read_image(tmp_path / "from8.tif", keep_16bit=True), uint8.astype(np.uint16) * 257
    )


def test_write_gray_and_jpeg(tmp_path: Path, photo: np.ndarray) -> None:
    gray = photo[..., 0]
    write_image(tmp_path / "gray.png", gray[..., None])
    np.testing.assert_array_equal(read_image(tmp_path / "gray.png")[..., 2], gray)
    write_image(tmp_path / "photo.jpg", photo, quality=100)
    assert np.abs(read_image(tmp_path / "photo.jpg").astype(int) - photo).mean() < 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gray.png", "photo.jpg"]  # no temp files


def test_write_errors(tmp_path: Path) -> None:
    image = np.zeros((4, 4, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="bit_depth"):
        write_image(tmp_path / "a.png", image, bit_depth=12)
    with pytest.raises(ValueError, match="16-bit"):
        write_image(tmp_path / "a.jpg", image, bit_depth=16)
    with pytest.raises(ValueError, match="extension"):
        write_image(tmp_path / "a.xyz", image)
    with pytest.raises(ValueError, match="NaN"):
        write_image(tmp_path / "a.png", np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match=r"\(H, W"):
        write_image(tmp_path / "a.png", np.zeros((4, 4, 2)))
    with pytest.raises(ValueError, match="value_range"):
        write_image(tmp_path / "a.png", image, value_range=(1.0, 1.0))
    with pytest.raises(ValueError, match="value_range"):
        write_image(tmp_path / "a.png", np.zeros((4, 4), dtype=np.int32))
    with pytest.raises(TypeError, match="numpy"):
        write_image(tmp_path / "a.png", [[0.0]])
    assert list(tmp_path.iterdir()) == []


# -- listing ---------------------------------------------------------------------------------------


def test_list_images_is_sorted_recursive_and_case_insensitive(tmp_path: Path) -> None:
    names = [
        "b/z.PNG",
        "b/a.jpeg",
        "a.JPG",
        "c/d/e.tif",
        "c/d/e.TIFF",
        "top.webp",
        "x.bmp",
        "notes.txt",
        ".hidden.png",
        ".cache/inner.png",
        "Upper.png",
    ]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert found == [
        "Upper.png",
        "a.JPG",
        "b/a.jpeg",
        "b/z.PNG",
        "c/d/e.TIFF",
        "c/d/e.tif",
        "top.webp",
        "x.bmp",
    ]
    assert list_images(tmp_path) == list_images(str(tmp_path))


def test_list_images_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        list_images(tmp_path / "nowhere")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(NotADirectoryError):
        list_images(tmp_path / "file.png")
