"""Untrusted image files and ``img2img apply`` outputs: what is decoded, reported and written.

* Only PNG, JPEG, BMP, TIFF, WebP and GIF are decoded, chosen by content: an EPS file
  named ``.png``/``.jpg`` never reaches Ghostscript (a fake ``gs`` first on ``PATH``
  would leave a marker) through ``read_image``, ``apply_filter``, ``img2img apply`` on
  a file or a folder, the training loader and ``img2img eval --data``.
* Errors say what the file is: a FIFO, a symbolic link loop, a broken link, a PNG
  whose ancillary chunk fails its CRC.
* Decoding memory stays under the bound SECURITY.md states.
* ``apply DIR``: a symlink loop is skipped and reported, any legal file name works,
  inputs that would share an output all get one.
* ``apply`` never writes over an input or an unrelated file, writes atomically with
  ordinary permissions, and a full disk leaves no partial or temporary file.
"""

from __future__ import annotations

import errno
import os
import struct
import subprocess
import sys
import textwrap
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import img2img_filters
from conftest import EPS_BYTES
from img2img_filters.checkpoint import save_model
from img2img_filters.cli import main
from img2img_filters.data import load_filtered_dataset
from img2img_filters.imageio import ImageReadError, read_image
from img2img_filters.infer import apply_filter, apply_folder
from img2img_filters.infer.folder import output_paths
from img2img_filters.models import create_img2img_model
from pngs import png_chunk

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A real photo, uint8 (64, 80, 3) RGB."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[100:164, 150:230])


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    """A small network that learned the study's Sobel (the filter recorded in its metadata)."""
    model = create_img2img_model(3, 1, "study")
    path = tmp_path_factory.mktemp("model") / "study.safetensors"
    return save_model(model, path, filter="study-sobel")


def _one_line(err: str, *words: str) -> None:
    assert err.startswith("img2img: error: ") and err.count("\n") == 1, err
    for word in words:
        assert word in err, err


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*"))


# == 1. only allow-listed formats, chosen by content ===============================================


def test_the_fake_ghostscript_is_what_pillow_runs(fake_ghostscript: Path, tmp_path: Path) -> None:
    """The control: Pillow alone, given the EPS file, runs the planted ``gs``."""
    path = tmp_path / "photo.png"
    path.write_bytes(EPS_BYTES)
    with pytest.raises(Exception), Image.open(path) as image:  # noqa: B017 (any failure of gs)
        image.load()
    assert fake_ghostscript.exists()


@pytest.mark.parametrize("name", ["photo.png", "photo.jpg"])
def test_read_image_never_decodes_eps(fake_ghostscript: Path, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(EPS_BYTES)
    model = create_img2img_model(3, 1, "linear")
    for read in (read_image, lambda p: apply_filter(p, model, device="cpu")):
        with pytest.raises(ImageReadError) as excinfo:
            read(path)
        message = str(excinfo.value)
        assert str(path) in message and "\n" not in message
        assert "PostScript" in message and "PNG, JPEG, BMP, TIFF, WebP and GIF" in message
    assert not fake_ghostscript.exists()


def _other_formats(folder: Path, photo: np.ndarray) -> dict[str, str]:
    """Files in formats Pillow reads but img2img does not, each named .png: name -> format."""
    files = {"ppm.png": "PPM", "tga.png": "TGA", "ico.png": "ICO", "pcx.png": "PCX"}
    for name, format_ in files.items():
        Image.fromarray(photo[:32, :32]).save(folder / name, format=format_)
    (folder / "pdf.png").write_bytes(b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n")
    (folder / "svg.png").write_bytes(b'<svg xmlns="http://www.w3.org/2000/svg" width="8"/>')
    return files


def test_formats_outside_the_list_are_refused(tmp_path: Path, photo: np.ndarray) -> None:
    files = _other_formats(tmp_path, photo)
    for name in [*files, "pdf.png", "svg.png"]:
        with pytest.raises(
            ImageReadError, match="img2img reads PNG, JPEG, BMP, TIFF, WebP and GIF"
        ):
            read_image(tmp_path / name)
    with pytest.raises(ImageReadError, match="looks like PDF"):
        read_image(tmp_path / "pdf.png")


def test_allowed_formats_are_read_by_content_whatever_the_name(
    tmp_path: Path, photo: np.ndarray
) -> None:
    for format_, lossless in (("BMP", True), ("TIFF", True), ("GIF", False), ("WEBP", True)):
        path = tmp_path / f"{format_.lower()}.jpg"  # the wrong extension
        options = {"lossless": True} if format_ == "WEBP" else {}
        Image.fromarray(photo).save(path, format=format_, **options)
        image = read_image(path)
        assert image.shape == photo.shape
        if lossless:
            np.testing.assert_array_equal(image, photo)


def test_cli_apply_a_file_never_decodes_eps(
    fake_ghostscript: Path, tmp_path: Path, model_path: Path, capsys
) -> None:
    path = tmp_path / "photo.png"
    path.write_bytes(EPS_BYTES)
    output = tmp_path / "out.png"
    assert main(["apply", str(model_path), str(path), "-o", str(output), "--device", "cpu"]) == 1
    _one_line(capsys.readouterr().err, str(path), "PostScript", "img2img reads PNG")
    assert not output.exists() and not fake_ghostscript.exists()


def _photo_folder(folder: Path, photo: np.ndarray, count: int = 4) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        paths.append(folder / f"p{index}.png")
        Image.fromarray(np.roll(photo, 9 * index, axis=1)).save(paths[-1])
    return paths


def test_cli_apply_a_folder_skips_eps_and_writes_the_rest(
    fake_ghostscript: Path, tmp_path: Path, photo: np.ndarray, model_path: Path, capsys
) -> None:
    good = _photo_folder(tmp_path / "in", photo, 2)
    (tmp_path / "in" / "evil.png").write_bytes(EPS_BYTES)
    (tmp_path / "in" / "evil2.jpg").write_bytes(EPS_BYTES)
    out = tmp_path / "out"
    code = main(["apply", str(model_path), str(tmp_path / "in"), "-o", str(out), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out.startswith("done 2, skipped 0, failed 2 of 4 images")
    assert "evil.png" in captured.out and "evil2.jpg" in captured.out
    assert "PostScript" in captured.out
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in good)
    assert not fake_ghostscript.exists()


def test_training_data_never_decodes_eps(
    fake_ghostscript: Path, tmp_path: Path, photo: np.ndarray, monkeypatch, notices
) -> None:
    """``img2img train --data DIR`` loads its photos with ``load_filtered_dataset``."""
    monkeypatch.setenv("IMG2IMG_CACHE", str(tmp_path / "cache"))
    _photo_folder(tmp_path / "data", photo)
    evil = tmp_path / "data" / "evil.png"
    evil.write_bytes(EPS_BYTES)
    with notices("evil.png"):
        train, _ = load_filtered_dataset(data=tmp_path / "data", crop_size=16, val_fraction=0.25)
    assert len(train) > 0
    # Streamed: each file is decoded when a batch needs it.
    train, val = load_filtered_dataset(
        data=tmp_path / "data", crop_size=16, val_fraction=0.25, stream=True
    )
    with notices("evil.png"):
        for dataset in (train, val):
            inputs, _ = dataset.batch(np.arange(len(dataset)))
            assert bool(inputs.isfinite().all())
    assert not fake_ghostscript.exists()


def test_cli_eval_data_folder_never_decodes_eps(
    fake_ghostscript: Path,
    tmp_path: Path,
    photo: np.ndarray,
    model_path: Path,
    monkeypatch,
    capsys,
    notices,
) -> None:
    monkeypatch.setenv("IMG2IMG_CACHE", str(tmp_path / "cache"))
    _photo_folder(tmp_path / "data", photo, 5)
    (tmp_path / "data" / "evil.jpg").write_bytes(EPS_BYTES)
    with notices("evil.jpg"):
        code = main(["eval", str(model_path), "--data", str(tmp_path / "data"), "--device", "cpu"])
    assert code == 0 and "PSNR" in capsys.readouterr().out
    assert not fake_ghostscript.exists()


def _pair_folders(tmp_path: Path, photo: np.ndarray) -> tuple[Path, Path]:
    """Four photo pairs (the target is the red channel), then an EPS as an input and as a target."""
    inputs, targets = tmp_path / "in", tmp_path / "out"
    for path in _photo_folder(inputs, photo):
        targets.mkdir(exist_ok=True)
        Image.fromarray(np.asarray(Image.open(path))[..., 0]).save(targets / path.name)
    (inputs / "evil.png").write_bytes(EPS_BYTES)
    Image.fromarray(photo[..., 0]).save(targets / "evil.png")
    Image.fromarray(photo).save(inputs / "evil2.png")
    (targets / "evil2.png").write_bytes(EPS_BYTES)
    return inputs, targets


def test_photo_pairs_never_decode_eps(
    fake_ghostscript: Path, tmp_path: Path, photo: np.ndarray
) -> None:
    inputs, targets = _pair_folders(tmp_path, photo)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train, val = load_filtered_dataset(
            data=inputs, targets=targets, crop_size=16, val_fraction=0.25
        )
    reasons = dict(train.skipped)
    assert reasons["evil"].startswith("input unreadable") and "PostScript" in reasons["evil"]
    assert reasons["evil2"].startswith("target unreadable")
    assert len(train) + len(val) > 0  # the four good pairs are used
    assert not fake_ghostscript.exists()


def test_the_probe_on_pair_folders_never_decodes_eps(
    fake_ghostscript: Path, tmp_path: Path, photo: np.ndarray, capsys
) -> None:
    inputs, targets = _pair_folders(tmp_path, photo)
    code = main(["probe", "--data", str(inputs), "--targets", str(targets)])
    err = capsys.readouterr().err
    assert code != 0 and "evil.png" in err and len(err.strip().splitlines()) == 1
    assert not fake_ghostscript.exists()


def test_no_other_reader_of_image_files_in_the_package() -> None:
    """Images are decoded by ``read_image``; any other ``Image.open`` names its allowed formats,
    and OpenCV decodes bytes only where a header checked by Pillow came first."""
    readers = ("Image.open(", "cv2.imread(", "cv2.imdecode(", "skimage.io", "import imageio")
    found, unlisted = [], []
    for path in sorted((ROOT / "src" / "img2img_filters").rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            found += [f"{path.name}: {word}" for word in readers if word in line]
            if "Image.open(" in line and "formats=" not in line:
                unlisted.append(f"{path.name}:{number}")
    assert not unlisted
    assert not [item for item in found if "cv2.imread(" in item or "skimage.io" in item]
    assert not [item for item in found if "import imageio" in item]
    decoders = sorted({item for item in found if "cv2.imdecode(" in item})
    assert decoders == ["imageio.py: cv2.imdecode(", "targets.py: cv2.imdecode("]


# == 2. messages that say what the file is =========================================================


def _bad_crc_png(ancillary_first: bool) -> bytes:
    """A 4x3 PNG whose tEXt chunk (ancillary) fails its CRC, before or after the IDAT chunk."""
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 3, 8, 2, 0, 0, 0))
    pixels = png_chunk(b"IDAT", zlib.compress(b"".join(b"\x00" + bytes(12) for _ in range(3))))
    text = bytearray(png_chunk(b"tEXt", b"Comment\x00hello"))
    text[-1] ^= 0xFF
    chunks = [text, pixels] if ancillary_first else [pixels, text]
    return b"\x89PNG\r\n\x1a\n" + header + b"".join(map(bytes, chunks)) + png_chunk(b"IEND", b"")


@pytest.mark.parametrize("ancillary_first", [True, False], ids=["before-IDAT", "after-IDAT"])
def test_bad_crc_in_an_ancillary_chunk_is_called_corrupt(
    tmp_path: Path, ancillary_first: bool
) -> None:
    path = tmp_path / "crc.png"
    path.write_bytes(_bad_crc_png(ancillary_first))
    with pytest.raises(ImageReadError) as excinfo:
        read_image(path)
    message = str(excinfo.value)
    assert str(path) in message and "corrupt" in message
    assert "CRC mismatch in chunk 'tEXt'" in message and "recognised" not in message


def test_fifo_loop_and_broken_link_are_named(tmp_path: Path, model_path: Path, capsys) -> None:
    os.mkfifo(tmp_path / "fifo.png")
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    (tmp_path / "a.png").symlink_to(tmp_path / "b.png")
    (tmp_path / "b.png").symlink_to(tmp_path / "a.png")
    (tmp_path / "broken.png").symlink_to(tmp_path / "gone.png")
    expected = {
        "fifo.png": "not a regular file: a FIFO",
        "loop.png": "symlink loop",
        "a.png": "symlink loop",
        "broken.png": "a symbolic link to",
    }
    for name, words in expected.items():
        path = tmp_path / name
        with pytest.raises(ImageReadError) as excinfo:
            read_image(path)
        assert words in str(excinfo.value) and str(path) in str(excinfo.value)
        if name != "broken.png":
            assert "not found" not in str(excinfo.value)
        code = main(["apply", str(model_path), str(path), "-o", str(tmp_path / "o.png")])
        assert code == 1
        _one_line(capsys.readouterr().err, str(path), words)


# == 3. decoding memory ============================================================================

# The peak resident memory of this process alone: VmHWM (ru_maxrss keeps the parent's peak
# across fork and exec on Linux, so a child of the test runner would measure the runner).
_MEASURE = textwrap.dedent(
    """
    import resource, sys
    from pathlib import Path
    from img2img_filters.imageio import read_image

    def peak():
        status = Path("/proc/self/status")
        if status.exists():
            line = next(x for x in status.read_text().splitlines() if x.startswith("VmHWM:"))
            return int(line.split()[1]) * 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (
            1 if sys.platform == "darwin" else 1024
        )

    path, small, keep = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    read_image(small, keep_16bit=keep)  # imports and first-use allocations
    before = peak()
    image = read_image(path, keep_16bit=keep)
    print((peak() - before) / (image.shape[0] * image.shape[1]))
    """
)


@pytest.mark.parametrize(
    ("bits", "keep", "bound"),
    [(8, False, 10.0), (16, True, 13.0), (16, False, 13.0)],
    ids=["8-bit", "16-bit-kept", "16-bit-to-8"],
)
def test_decoding_peak_memory_per_pixel(
    tmp_path: Path, bits: int, keep: bool, bound: float
) -> None:
    """SECURITY.md: at most 10 bytes per pixel (8-bit), 13 plus the file's size (16-bit)."""
    side = 2000
    y, x = np.mgrid[0:side, 0:side]
    smooth = (np.sin(x / 37) * np.cos(y / 23) + 1) * 100
    noise = np.random.default_rng(0).integers(0, 50, (side, side, 3))
    image = (smooth[..., None] * [1.0, 0.5, 0.33] + noise).astype(np.uint16)
    image = image * 257 if bits == 16 else image.astype(np.uint8)
    path, small = tmp_path / "big.png", tmp_path / "small.png"
    cv2.imwrite(str(path), image)
    cv2.imwrite(str(small), image[:8, :8])
    package = Path(img2img_filters.__file__).resolve().parents[1]  # the img2img under test
    env = dict(os.environ, PYTHONPATH=str(package), OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path), str(small), "1" if keep else "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    per_pixel = float(result.stdout.strip())
    file_bytes = path.stat().st_size / side**2 if bits == 16 else 0.0
    assert per_pixel >= 3  # the result's own bytes: the measurement sees the decode
    assert per_pixel < bound + file_bytes, (per_pixel, file_bytes)


# == 4. folders ====================================================================================


def test_folder_with_a_symlink_loop_and_a_long_name(
    tmp_path: Path, photo: np.ndarray, model_path: Path, capsys
) -> None:
    good = _photo_folder(tmp_path / "in", photo, 2)
    long = tmp_path / "in" / ("x" * 238 + ".png")  # 242 bytes: a legal name
    Image.fromarray(photo).save(long)
    loop = tmp_path / "in" / "loop.png"
    loop.symlink_to(loop)
    out = tmp_path / "out"
    code = main(["apply", str(model_path), str(tmp_path / "in"), "-o", str(out), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out.startswith("done 3, skipped 0, failed 1 of 4 images"), captured.out
    assert f"{loop}" in captured.out and "symlink loop" in captured.out
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in [*good, long])
    assert _hidden(out) == []


def test_outputs_that_would_collide_all_get_a_name(tmp_path: Path, photo: np.ndarray) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    sources = {
        "a.jpg": photo,
        "a.png": photo[:, ::-1],
        "a.jpg.png": photo[::-1],
        "B.png": np.roll(photo, 5, axis=0),
        "b.jpg": np.roll(photo, 5, axis=1),  # differs from B.png only in case
    }
    for name, image in sources.items():
        Image.fromarray(np.ascontiguousarray(image)).save(folder / name, quality=95)
    model = create_img2img_model(3, 1, "study")
    summary = apply_folder(model, folder, tmp_path / "out", format="npy", device="cpu")
    assert summary.ok and len(summary.done) == 5
    inputs = sorted(folder.iterdir())
    outputs = output_paths(inputs, folder, tmp_path / "out", ".npy")
    assert len({str(p).casefold() for p in outputs}) == 5
    assert len(list((tmp_path / "out").iterdir())) == 5
    for source, target in zip(inputs, outputs, strict=True):
        expected = apply_filter(source, model, device="cpu")
        np.testing.assert_array_equal(np.load(target), expected)
    names = {source.name: target.name for source, target in zip(inputs, outputs, strict=True)}
    assert names["a.jpg.png"] == "a.jpg.npy"  # a name nobody else wanted is kept
    assert names["a.png"] == "a.png.npy"
    again = apply_folder(model, folder, tmp_path / "out", format="npy", device="cpu")
    assert len(again.skipped) == 5  # the same names on a re-run


def test_long_names_that_collide_are_shortened(tmp_path: Path) -> None:
    stem = "y" * 250
    inputs = [tmp_path / f"{stem}.jpg", tmp_path / f"{stem}.png"]
    outputs = output_paths(inputs, tmp_path, tmp_path / "out", ".png")
    assert len(set(outputs)) == 2
    assert all(len(os.fsencode(p.name)) <= 255 for p in outputs)


# == 5. never an input, never an unrelated file ====================================================


def test_the_input_image_is_never_the_output(
    tmp_path: Path, photo: np.ndarray, model_path: Path, capsys
) -> None:
    path = tmp_path / "photo.png"
    Image.fromarray(photo).save(path)
    original = path.read_bytes()
    (tmp_path / "link.png").symlink_to(path)
    os.link(path, tmp_path / "hard.png")
    for output in (path, tmp_path / "link.png", tmp_path / "hard.png", tmp_path / "photo"):
        assert main(["apply", str(model_path), str(path), "-o", str(output)]) == 1
        _one_line(capsys.readouterr().err, "input image", "--overwrite-input")
        assert path.read_bytes() == original
    assert main(["apply", str(model_path), str(path), "-o", str(path), "--overwrite-input"]) == 0
    capsys.readouterr()
    assert path.read_bytes() != original
    assert read_image(path).shape == photo.shape


def test_output_folder_for_one_image(
    tmp_path: Path, photo: np.ndarray, model_path: Path, capsys
) -> None:
    path = tmp_path / "photo.png"
    Image.fromarray(photo).save(path)
    results = tmp_path / "results"
    results.mkdir()
    unrelated = tmp_path / "results.png"
    unrelated.write_bytes(b"someone else's file")
    assert main(["apply", str(model_path), str(path), "-o", str(results)]) == 0
    assert f"wrote {results / 'photo.png'}" in capsys.readouterr().out
    assert unrelated.read_bytes() == b"someone else's file"
    assert read_image(results / "photo.png").shape == photo.shape
    # The name img2img made exists now: replaced only with --overwrite.
    assert main(["apply", str(model_path), str(path), "-o", str(results)]) == 1
    _one_line(capsys.readouterr().err, "exists", "--overwrite")
    assert main(["apply", str(model_path), str(path), "-o", f"{tmp_path / 'new'}/"]) == 0
    assert (tmp_path / "new" / "photo.png").is_file()


def test_the_input_folder_is_never_the_output_folder(
    tmp_path: Path, photo: np.ndarray, model_path: Path, capsys
) -> None:
    folder = tmp_path / "in"
    _photo_folder(folder, photo, 2)
    Image.fromarray(photo).save(folder / "j.jpg", quality=95)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    (tmp_path / "alias").symlink_to(folder)
    for output in (folder, tmp_path / "alias", folder / "."):
        assert main(["apply", str(model_path), str(folder), "-o", str(output)]) == 1
        _one_line(capsys.readouterr().err, "is the input folder", "--overwrite-input")
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    # An output folder whose entries lead to the inputs: refused file by file, even with --overwrite.
    out = tmp_path / "out"
    out.mkdir()
    (out / "p0.png").symlink_to(folder / "p0.png")
    os.link(folder / "p1.png", out / "p1.png")
    code = main(["apply", str(model_path), str(folder), "-o", str(out), "--overwrite"])
    captured = capsys.readouterr()
    assert code == 1 and "done 1, skipped 0, failed 2 of 3" in captured.out
    assert captured.out.count("is an input image") == 2
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    (tmp_path / "file.png").write_bytes(b"an unrelated file")
    assert main(["apply", str(model_path), str(folder), "-o", str(tmp_path / "file.png")]) == 1
    _one_line(capsys.readouterr().err, "is a file")
    assert (tmp_path / "file.png").read_bytes() == b"an unrelated file"
    args = ["apply", str(model_path), str(folder), "-o", str(folder), "--overwrite-input"]
    assert main(args) == 0
    assert "done 1, skipped 2, failed 0 of 3" in capsys.readouterr().out  # j.jpg -> j.png
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.name != "j.png"} == before


# == 6. atomic outputs, ordinary permissions, a full disk ==========================================


def test_outputs_have_ordinary_permissions(
    tmp_path: Path, photo: np.ndarray, model_path: Path, capsys
) -> None:
    path = tmp_path / "photo.png"
    Image.fromarray(photo).save(path)
    _photo_folder(tmp_path / "in", photo, 1)
    previous = os.umask(0o022)
    try:
        assert main(["apply", str(model_path), str(path), "-o", str(tmp_path / "o.png")]) == 0
        assert (
            main(["apply", str(model_path), str(tmp_path / "in"), "-o", str(tmp_path / "d")]) == 0
        )
    finally:
        os.umask(previous)
    for output in (tmp_path / "o.png", tmp_path / "d" / "p0.png"):
        assert output.stat().st_mode & 0o777 == 0o644, oct(output.stat().st_mode)


def _full_disk(monkeypatch) -> None:
    """Every file written as bytes takes half its data, then the disk is full (ENOSPC)."""

    def write_bytes(self: Path, data) -> int:
        with open(self, "wb") as stream:
            stream.write(bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", write_bytes)


def test_a_full_disk_leaves_nothing_half_written(
    tmp_path: Path, photo: np.ndarray, model_path: Path, monkeypatch, capsys
) -> None:
    path = tmp_path / "photo.png"
    Image.fromarray(photo).save(path)
    out = tmp_path / "out"
    out.mkdir()
    existing = out / "o.png"
    existing.write_bytes(b"the previous output")
    _photo_folder(tmp_path / "in", photo, 2)
    _full_disk(monkeypatch)
    assert main(["apply", str(model_path), str(path), "-o", str(existing)]) == 1
    _one_line(capsys.readouterr().err, str(existing), "No space left on device")
    assert existing.read_bytes() == b"the previous output"
    code = main(["apply", str(model_path), str(tmp_path / "in"), "-o", str(out / "d")])
    captured = capsys.readouterr()
    assert code == 1 and "done 0, skipped 0, failed 2 of 2" in captured.out
    assert captured.out.count("No space left on device") == 2
    assert sorted(p.name for p in out.rglob("*")) == ["d", "o.png"]  # no partial, no temporary
    assert _hidden(out) == [] and _hidden(tmp_path / "in") == []
