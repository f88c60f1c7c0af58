"""Teachers img2img cannot compute: external programs (``cmd:``) and Python callables."""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from skimage import data as skdata

from img2img_filters.checkpoint import load_model
from img2img_filters.cli import main
from img2img_filters.data import load_filtered_dataset
from img2img_filters.filters import CommandFilter, create_filter
from img2img_filters.filters.external import TeacherNotRunError
from img2img_filters.runs import DataConfig, ModelConfig, train_run

BLUR = """
import sys, cv2
source, target = sys.argv[1], sys.argv[2]
if len(sys.argv) > 3:
    with open(sys.argv[3], "a") as counter:
        counter.write("run\\n")
image = cv2.imread(source, cv2.IMREAD_COLOR)
if image.max() == 0:
    sys.stderr.write("refusing a black photo\\n")
    sys.exit(3)
cv2.imwrite(target, cv2.GaussianBlur(image, (5, 5), 1.2))
"""

BAD = {
    "exit": "import sys; sys.stderr.write('bad things happened\\n'); sys.exit(2)",
    "hang": (  # a child that outlives the program keeps stderr open unless its group is killed
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); time.sleep(30)"
    ),
    "nowhere": "pass",
    "garbage": "import sys; open(sys.argv[2], 'wb').write(b'not a png at all')",
    "resized": "import sys, numpy as np, cv2; cv2.imwrite(sys.argv[2], np.zeros((5, 5), np.uint8))",
}
REASONS = {
    "exit": "exit status 2; stderr: bad things happened",
    "hang": "timed out after 0.5 s",
    "nowhere": "wrote no output file",
    "garbage": "its output is unreadable",
    "resized": "its output is 5x5, the photo 16x16",
}


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("IMG2IMG_CACHE", str(tmp_path / "cache"))


@functools.cache
def _crops_source() -> tuple[np.ndarray, ...]:
    photos = [skdata.astronaut(), skdata.coffee(), skdata.chelsea()]
    return tuple(cv2.resize(p, (32, 16), interpolation=cv2.INTER_AREA) for p in photos)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Three 16x32 photos: two 16x16 crops each (6 crops)."""
    root = tmp_path / "photos"
    root.mkdir()
    for index, photo in enumerate(_crops_source()):
        cv2.imwrite(str(root / f"p{index}.png"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    return root


def _script(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    return path


def _blur_spec(tmp_path: Path, counter: Path | None = None) -> str:
    script = _script(tmp_path, "blur", BLUR)
    extra = f" {counter}" if counter else ""
    return f"cmd:{sys.executable} {script} {{in}} {{out}}{extra}"


def _runs(counter: Path) -> int:
    return len(counter.read_text().splitlines()) if counter.exists() else 0


def test_a_program_teaches_what_opencv_computes_and_runs_once_per_photo(tmp_path, folder) -> None:
    counter = tmp_path / "count.txt"
    spec = _blur_spec(tmp_path, counter)
    train, val = load_filtered_dataset(data=folder, filter=spec, crop_size=16, val_fraction=0.34)
    assert len(train) + len(val) == 6 and _runs(counter) == 6
    for dataset in (train, val):
        inputs, targets = dataset.batch(np.arange(len(dataset)))
        photos = (inputs.numpy() * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
        expected = np.stack([cv2.GaussianBlur(p, (5, 5), 1.2) for p in photos])
        np.testing.assert_array_equal(
            (targets.numpy() * 255).round().astype(np.uint8).transpose(0, 2, 3, 1), expected
        )
    assert train.filter.out_channels == 3 and train.filter.output_range == (0.0, 1.0)
    again, _ = load_filtered_dataset(data=folder, filter=spec, crop_size=16, val_fraction=0.34)
    torch.testing.assert_close(again.batch([0, 3])[1], train.batch([0, 3])[1], rtol=0, atol=0)
    assert _runs(counter) == 6  # the second run read every output from the cache


def test_imagemagick_as_the_teacher(folder) -> None:
    program = shutil.which("magick") or shutil.which("convert")
    if program is None:
        if os.environ.get("CI"):
            pytest.fail("ImageMagick (convert or magick) is required in CI")
        pytest.skip("ImageMagick is not installed (apt-get install imagemagick)")
    train, _ = load_filtered_dataset(
        data=folder, filter=f"cmd:{program} {{in}} -negate {{out}}", crop_size=16, val_fraction=0
    )
    inputs, targets = train.batch(np.arange(len(train)))
    torch.testing.assert_close(targets, 1.0 - inputs, rtol=0, atol=1e-6)


def test_a_program_teaches_random_crops_of_a_streamed_folder(tmp_path, folder) -> None:
    counter = tmp_path / "count.txt"
    spec = _blur_spec(tmp_path, counter)
    train, val = load_filtered_dataset(data=folder, filter=spec, crop_size=16, stream=True)
    assert _runs(counter) == len(val) == 1  # the validation crops, when loaded
    inputs, targets = train.batch([0, 1])
    photos = (inputs.numpy() * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
    expected = np.stack([cv2.GaussianBlur(p, (5, 5), 1.2) for p in photos])
    got = (targets.numpy() * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(got, expected)
    assert _runs(counter) == 3


def test_the_program_output_type_follows_out_extension(tmp_path, folder) -> None:
    script = _script(
        tmp_path,
        "depth",
        "import sys, cv2, numpy as np\n"
        "g = cv2.cvtColor(cv2.imread(sys.argv[1]), cv2.COLOR_BGR2GRAY).astype(np.float32)\n"
        "np.save(sys.argv[2], g / 100.0 - 1.0)\n",
    )
    spec = f"cmd:{sys.executable} {script} {{in}} {{out.npy}}"
    train, _ = load_filtered_dataset(data=folder, filter=spec, crop_size=16, val_fraction=0)
    inputs, targets = train.batch([0])
    photo = (inputs[0].numpy() * 255).round().astype(np.uint8).transpose(1, 2, 0)
    gray = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY).astype(np.float32)
    np.testing.assert_array_equal(targets[0, 0].numpy(), gray / 100.0 - 1.0)
    low, high = train.filter.output_range
    assert train.filter.output_dtype == np.float32 and low < 0 < high


def test_a_failing_photo_is_reported_with_stderr_and_skipped(tmp_path, folder, notices) -> None:
    photo = np.zeros((16, 32, 3), np.uint8)  # black: the script refuses it
    cv2.imwrite(str(folder / "p3.png"), photo)
    spec = _blur_spec(tmp_path)
    with notices("failed on 2 of 8 crops"):
        train, _ = load_filtered_dataset(data=folder, filter=spec, crop_size=16, val_fraction=0)
    assert len(train) == 6
    reasons = [reason for _, reason in train.skipped]
    assert len(reasons) == 2 and all("stderr: refusing a black photo" in r for r in reasons)
    assert all(name.endswith("p3.png'") for name, _ in train.skipped)  # named by file


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_programs_stop_early_with_their_errors(tmp_path, kind) -> None:
    script = _script(tmp_path, kind, BAD[kind])
    timeout = 0.5 if kind == "hang" else 60.0
    teacher = CommandFilter(f"cmd:{sys.executable} {script} {{in}} {{out}}", timeout=timeout)
    photos = np.full((3, 3, 16, 16), 90, np.uint8)
    photos[:, 0] = np.arange(3)[:, None, None]  # three different photos
    with pytest.raises(RuntimeError, match="failed on 3 of the first 3 photos") as info:
        teacher.prepare(photos)
    assert REASONS[kind] in str(info.value) and "\n" not in str(info.value)


def test_command_errors_before_any_photo(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="'no-such-program-x' is not on PATH; install it"):
        create_filter("cmd:no-such-program-x {in} {out}", allow_commands=True)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_filter(f"cmd:{tmp_path}/nothing {{in}} {{out}}", allow_commands=True)
    with pytest.raises(ValueError, match=r"no \{in\}; put \{in\}"):
        create_filter("cmd:cp photo.png {out}", allow_commands=True)
    with pytest.raises(ValueError, match=r"no \{out\}"):
        create_filter("cmd:cp {in} x.png", allow_commands=True)
    with pytest.raises(ValueError, match="a Python callable cannot be rebuilt"):
        create_filter("callable:os.system")  # a recorded callable's name is never imported
    code = main(["train", "--filter", "cmd:cp {in}", "--out", str(tmp_path / "r")])
    assert code == 2 and not (tmp_path / "r").exists()  # refused with the arguments


def _photo_batch() -> torch.Tensor:
    return torch.from_numpy(np.stack(_crops_source())[:, :16, :16].transpose(0, 3, 1, 2)) / 255.0


def test_a_callable_teacher() -> None:
    def red(photo: np.ndarray) -> np.ndarray:
        return photo[..., 0].astype(np.uint16) * 200

    train, _ = load_filtered_dataset(filter=red, crop_size=32, limit=4)
    inputs, targets = train.batch([0, 1])
    torch.testing.assert_close(targets[:, 0], (inputs[:, 0] * 255).round() * 200 / 65535)
    teacher = create_filter(red)
    assert teacher(_photo_batch()).shape == (3, 1, 16, 16)


def test_a_callable_teacher_on_tiny_imagenet(mini_root: Path) -> None:
    def inverted(photo: np.ndarray) -> np.ndarray:
        return 255 - photo

    train, val = load_filtered_dataset(data=mini_root, filter=inverted, limit=3)
    for dataset in (train, val):
        inputs, targets = dataset.batch(np.arange(len(dataset)))
        torch.testing.assert_close(targets, 1.0 - inputs, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("function", "error", "message"),
    [
        (lambda p: 1 / 0, ValueError, "raised ZeroDivisionError on photo 0 of the batch"),
        (lambda p: p[:4], ValueError, "the output for photo 0 of the batch is 4x16"),
        (lambda p: p[..., :2], ValueError, r"expected shape \(H, W\), \(H, W, 1\)"),
        (lambda p: p.astype(np.int64), TypeError, "expected uint8, uint16 or float32 samples"),
    ],
)
def test_bad_callables_name_the_photo(function, error, message) -> None:
    with pytest.raises(error, match=message) as info:
        create_filter(function)(_photo_batch())
    assert "\n" not in str(info.value)


def test_a_recorded_command_never_runs(tmp_path, folder, capsys) -> None:
    counter = tmp_path / "marker.txt"
    spec = _blur_spec(tmp_path, counter)
    out = tmp_path / "run"
    data = DataConfig(data=str(folder), filter=spec, crop_size=16, val_fraction=0.34)
    model = ModelConfig(arch="linear", options={"kernel_size": 3})
    train = {"max_epochs": 1, "progress": False, "batch_size": 8}
    train_run(out, data, model, train, figures=False, log=lambda _: None)
    assert _runs(counter) == 6
    counter.unlink()
    assert isinstance(create_filter(spec), CommandFilter) and not create_filter(spec).allow_run
    loaded = load_model(out / "model.safetensors")
    assert loaded.metadata["filter"] == spec
    assert main(["eval", str(out), "--data", str(folder), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 2  # one photo, two crops
    assert main(["report", str(out)]) == 0
    more = {"progress": False, "max_epochs": 2}  # a finished run resumes only to train longer
    train_run(out, train=more, resume=True, figures=False, log=lambda _: None)
    assert not counter.exists()  # cached outputs only
    shutil.rmtree(tmp_path / "cache" / "teacher")
    with pytest.raises(TeacherNotRunError, match="never runs a program recorded in a file"):
        more = {"progress": False, "max_epochs": 3}
        train_run(out, train=more, resume=True, figures=False, log=lambda _: None)
    assert main(["eval", str(out), "--data", str(folder)]) == 1
    assert "never runs a program recorded" in capsys.readouterr().err
    with pytest.raises(TeacherNotRunError):
        create_filter(spec, allow_files=False)(_photo_batch())
    assert not counter.exists()
