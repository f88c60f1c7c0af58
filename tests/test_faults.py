"""Faults: malicious and tampered checkpoints, killed and disk-full saves, diverging and
concurrent training, hostile archives and misbehaving download servers.

Builds on test_checkpoint.py, test_train.py and test_download.py (which hold the first
case of several of these) without repeating them.
"""

from __future__ import annotations

import builtins
import errno
import hashlib
import http.server
import io
import json
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from img2img_filters.checkpoint import (
    CheckpointError,
    load_model,
    read_metadata,
    safe_torch_load,
    save_model,
)
from img2img_filters.cli import main
from img2img_filters.data import DownloadError, UnsafeArchiveError, download_file, extract_zip
from img2img_filters.data import download as download_module
from img2img_filters.models import create_img2img_model
from img2img_filters.runs import LOCK_FILE, RunFolder
from img2img_filters.train import TrainingDivergedError, train_model

ROOT = Path(__file__).resolve().parents[1]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _temporary_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and ".tmp" in p.name)


def _child_env() -> dict[str, str]:
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    return env


# == checkpoints that try to run code ==============================================================


class _Payload:
    """Pickles as a call of ``function(*arguments)``: what a crafted checkpoint runs on unpickling."""

    def __init__(self, function, *arguments) -> None:
        self.function, self.arguments = function, arguments

    def __reduce__(self):
        return self.function, self.arguments


def _touch_code(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').write('ran')"


def _linear_state() -> tuple[dict[str, torch.Tensor], str]:
    model = create_img2img_model(3, 1, "linear")
    record = json.dumps({"arch": "linear", "in_channels": 3, "out_channels": 1, "options": {}})
    return {k: v.clone() for k, v in model.state_dict().items()}, record


def _malicious_files(folder: Path, marker: Path) -> dict[str, tuple[Path, str]]:
    """Crafted ``.pt`` files, each with the name of the global it smuggles in."""
    state, record = _linear_state()
    files: dict[str, tuple[Path, str]] = {}

    def add(name: str, content, refused: str, **options) -> None:
        path = folder / name
        torch.save(content, path, **options)
        files[name] = (path, refused)

    add("eval.pt", {"layers.0.weight": _Payload(builtins.eval, _touch_code(marker))}, "eval")
    add(
        "popen.pt", {"layers.0.weight": _Payload(subprocess.Popen, ["touch", str(marker)])}, "Popen"
    )
    add("system.pt", _Payload(os.system, f"touch {marker}"), "system")
    nested = {
        "state_dict": {**state, "extra": {"deep": [1, (2, _Payload(exec, _touch_code(marker)))]}}
    }
    add("nested.pt", {**nested, "img2img": record}, "exec")
    add(
        "legacy.pth",
        {"layers.0.weight": _Payload(builtins.eval, _touch_code(marker))},
        "eval",
        _use_new_zipfile_serialization=False,
    )
    add("import.bin", {"x": _Payload(builtins.__import__, "os")}, "__import__")

    # A genuine zip-format checkpoint whose data.pkl was replaced by a malicious pickle.
    genuine = save_model(create_img2img_model(3, 1, "linear"), folder / "genuine.pt")
    with zipfile.ZipFile(genuine) as archive:
        members = [(info, archive.read(info)) for info in archive.infolist()]
    evil = pickle.dumps(_Payload(builtins.eval, _touch_code(marker)), protocol=2)
    swapped = folder / "swapped.pt"
    with zipfile.ZipFile(swapped, "w", zipfile.ZIP_STORED) as archive:
        for info, data in members:
            archive.writestr(info, evil if info.filename.endswith("/data.pkl") else data)
    files["swapped.pt"] = (swapped, "eval")
    return files


def test_malicious_checkpoints_are_refused_and_their_code_does_not_run(
    tmp_path: Path, capsys
) -> None:
    marker = tmp_path / "ran"
    files = _malicious_files(tmp_path, marker)
    assert len(files) == 7 and not marker.exists()
    for name, (path, refused) in files.items():
        with pytest.raises(CheckpointError) as excinfo:
            load_model(path)
        message = str(excinfo.value)
        assert "refused" in message and str(path) in message, name
        assert refused in message, message  # names what was smuggled in
        assert "\x1b" not in message and "\n" not in message  # one plain line
        with pytest.raises(CheckpointError):
            read_metadata(path)
        assert not marker.exists(), f"loading {name} ran its code"
    # Through the command line: one line, exit 1, nothing run.
    image = tmp_path / "photo.png"
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    for name, (path, _) in files.items():
        code = main(["apply", str(path), str(image), "-o", str(tmp_path / "out.npy")])
        err = capsys.readouterr().err
        assert code == 1 and err.count("\n") == 1 and "refused" in err, (name, err)
    assert not marker.exists()
    assert not (tmp_path / "out.npy").exists()


def test_a_training_state_with_smuggled_code_is_refused_on_resume(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    state = tmp_path / "state.pt"
    torch.save(
        {"train_config": "{}", "model": {"w": _Payload(builtins.eval, _touch_code(marker))}}, state
    )
    with pytest.raises(ValueError, match="not a readable training state"):
        train_model(
            create_img2img_model(3, 1, "linear"),
            _PairList(4),
            _PairList(2),
            max_epochs=1,
            resume=str(state),
            progress=False,
        )
    assert not marker.exists()


def test_a_compressed_torch_file_is_refused_before_it_inflates(tmp_path: Path, monkeypatch) -> None:
    """A 100 KB ``.pt`` whose data.pkl inflates to 100 MB: PyTorch would inflate it in memory."""
    genuine = save_model(create_img2img_model(3, 1, "linear"), tmp_path / "genuine.pt")
    with zipfile.ZipFile(genuine) as archive:
        members = [(info, archive.read(info)) for info in archive.infolist()]
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(bomb, "w") as archive:
        for info, data in members:
            if info.filename.endswith("/data.pkl"):  # the pickle, then 100 MB that torch ignores
                padded = data + b"\0" * 100_000_000
                archive.writestr(info.filename, padded, compress_type=zipfile.ZIP_DEFLATED)
            else:
                archive.writestr(info, data)
    assert bomb.stat().st_size < 200_000

    def must_not_load(*args, **kwargs):
        raise AssertionError("torch.load was reached")

    monkeypatch.setattr(torch, "load", must_not_load)
    with pytest.raises(
        CheckpointError, match=r"data.pkl' is compressed, which torch.save never does"
    ):
        load_model(bomb)
    monkeypatch.undo()
    load_model(genuine)  # torch.save's own files are stored uncompressed, and load


def test_a_checkpoint_filter_spec_does_not_make_img2img_read_local_files(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    import img2img_filters.filters.linear as linear_filters

    secret = tmp_path / "secret.txt"
    secret.write_text("secret-token 1 2\n")
    model = create_img2img_model(3, 1, "linear")
    checkpoint = save_model(model, tmp_path / "evil.safetensors", filter=f"kernel:path={secret}")
    opened: list[str] = []
    real = linear_filters.load_kernel_file
    monkeypatch.setattr(
        linear_filters,
        "load_kernel_file",
        lambda path, *a: opened.append(str(path)) or real(path, *a),
    )
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "photo.png")
    main(["apply", str(checkpoint), str(tmp_path / "photo.png"), "-o", str(tmp_path / "out.png")])
    main(["eval", str(checkpoint)])
    captured = capsys.readouterr()
    assert "secret-token" not in captured.out + captured.err
    assert opened == []


# == tampered safetensors ==========================================================================


def _good_safetensors(folder: Path, name: str = "good.safetensors") -> Path:
    torch.manual_seed(0)
    return save_model(create_img2img_model(3, 1, "linear"), folder / name, filter="study-sobel")


def _split(path: Path) -> tuple[int, dict, bytes]:
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return length, json.loads(data[8 : 8 + length]), data[8 + length :]


def _join(header: dict, body: bytes) -> bytes:
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + body


def _with_metadata(path: Path, target: Path, record: str) -> Path:
    """``path``'s tensors with another ``img2img`` metadata entry (a string, stored as given)."""
    save_file(load_file(str(path)), str(target), metadata={"img2img": record})
    return target


def _metadata_of(path: Path) -> dict:
    return json.loads(_split(path)[1]["__metadata__"]["img2img"])


def _tampered_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """Each tampered file, with words its error must hold."""
    good = _good_safetensors(folder)
    data = good.read_bytes()
    length, header, body = _split(good)
    record = _metadata_of(good)
    files: dict[str, tuple[Path, str]] = {}

    def raw(name: str, content: bytes, words: str) -> None:
        (folder / name).write_bytes(content)
        files[name] = (folder / name, words)

    def meta(name: str, value, words: str) -> None:
        text = value if isinstance(value, str) else json.dumps(value)
        files[name] = (_with_metadata(good, folder / name, text), words)

    def tensors(name: str, change, words: str) -> None:
        state = load_file(str(good))
        save_file(change(state), str(folder / name), metadata={"img2img": json.dumps(record)})
        files[name] = (folder / name, words)

    # the header's length field lies
    raw("length-huge.safetensors", struct.pack("<Q", 2**62) + data[8:], "not a valid safetensors")
    raw("length-past-end.safetensors", struct.pack("<Q", len(data)) + data[8:], "not a valid")
    raw("length-short.safetensors", struct.pack("<Q", length - 9) + data[8:], "not a valid")
    raw("length-long.safetensors", struct.pack("<Q", length + 16) + data[8:], "not a valid")
    raw("length-zero.safetensors", struct.pack("<Q", 0) + data[8:], "not a valid")
    raw("length-only.safetensors", data[:8], "not a valid")
    # the header or the offsets are garbage
    raw(
        "garbage-header.safetensors",
        struct.pack("<Q", 16) + b"{not json at all" + body,
        "not a valid",
    )
    offsets = json.loads(json.dumps(header))
    key = next(k for k in offsets if k != "__metadata__")
    offsets[key]["data_offsets"][1] += 4096
    raw("offsets-past-end.safetensors", _join(offsets, body), "not a valid")
    overlap = json.loads(json.dumps(header))
    for name in overlap:
        if name != "__metadata__":
            overlap[name]["data_offsets"] = [
                0,
                overlap[name]["data_offsets"][1] - overlap[name]["data_offsets"][0],
            ]
    raw("offsets-overlap.safetensors", _join(overlap, body), "not a valid")
    # the img2img metadata is garbage or lies
    meta("metadata-not-json.safetensors", "{garbage", "unreadable img2img metadata")
    meta(
        "metadata-a-string.safetensors", '"arch in_channels out_channels"', "must be a JSON object"
    )
    meta("metadata-a-number.safetensors", "5", "must be a JSON object")
    meta(
        "metadata-without-arch.safetensors",
        {k: v for k, v in record.items() if k != "arch"},
        "lacks 'arch'",
    )
    meta(
        "metadata-float-channels.safetensors",
        {**record, "in_channels": 3.9},
        "'in_channels' must be a positive",
    )
    meta(
        "metadata-bool-channels.safetensors",
        {**record, "out_channels": True},
        "'out_channels' must be",
    )
    meta(
        "metadata-infinite-channels.safetensors",
        '{"arch": "linear", "in_channels": 1e400, "out_channels": 1}',
        "must be a positive integer",
    )
    meta(
        "metadata-options-list.safetensors",
        {**record, "options": [1, 2]},
        "'options' must be a mapping",
    )
    meta(
        "metadata-unknown-option.safetensors",
        {**record, "options": {"bogus": 1}},
        "unknown option 'bogus'",
    )
    meta(
        "metadata-unknown-arch.safetensors",
        {**record, "arch": "transformer"},
        "arch must be one of",
    )
    meta(
        "metadata-other-arch.safetensors",
        {**record, "arch": "study", "options": {}},
        "does not match architecture 'study'",
    )
    # metadata asking for a network far larger than the file: refused before it is allocated
    # (4000 x 4000 x 31 x 31 float32 is 61 GB) or built (a million layers)
    huge = {**record, "options": {"kernel_size": 31, "width": 4000, "depth": 3}}
    meta(
        "metadata-huge-network.safetensors", huge, "option width must be an integer from 1 to 1024"
    )
    wide = {
        **record,
        "in_channels": 100_000,
        "out_channels": 100_000,
        "options": {"kernel_size": 31},
    }
    meta("metadata-wide-network.safetensors", wide, "num_input_channels must be an integer from 1")
    deep = {**record, "options": {"depth": 1_000_000}}
    meta("metadata-deep-network.safetensors", deep, "option depth must be an integer from 1 to 64")
    # the tensors are wrong
    tensors(
        "nan-weight.safetensors",
        lambda s: {
            **s,
            "layers.0.weight": s["layers.0.weight"].index_fill(3, torch.tensor([2]), float("nan")),
        },
        "'layers.0.weight' contains NaN or Inf",
    )
    tensors(
        "inf-bias.safetensors",
        lambda s: {**s, "layers.0.bias": torch.full_like(s["layers.0.bias"], float("-inf"))},
        "'layers.0.bias' contains NaN or Inf",
    )
    tensors(
        "wrong-shape.safetensors",
        lambda s: {**s, "layers.0.weight": torch.zeros(1, 3, 3, 3)},
        "'layers.0.weight' has shape (1, 3, 3, 3)",
    )
    tensors(
        "transposed.safetensors",
        lambda s: {**s, "layers.0.weight": s["layers.0.weight"].transpose(0, 1).contiguous()},
        "has shape (3, 1, 5, 5)",
    )
    tensors(
        "missing-key.safetensors",
        lambda s: {"layers.0.weight": s["layers.0.weight"]},
        "missing keys ['layers.0.bias']",
    )
    tensors(
        "extra-key.safetensors",
        lambda s: {**s, "layers.9.weight": torch.zeros(1)},
        "unexpected keys ['layers.9.weight']",
    )
    tensors(
        "integer-weights.safetensors",
        lambda s: {k: v.to(torch.int32) for k, v in s.items()},
        "has dtype torch.int32",
    )
    tensors(
        "bool-weights.safetensors",
        lambda s: {k: v.bool() for k, v in s.items()},
        "has dtype torch.bool",
    )
    tensors(
        "complex-weights.safetensors",
        lambda s: {k: v.to(torch.complex64) for k, v in s.items()},
        "has dtype torch.complex64",
    )
    tensors(
        "float8-weights.safetensors",
        lambda s: {k: v.to(torch.float8_e4m3fn) for k, v in s.items()},
        "float8",
    )
    # truncated anywhere
    for fraction in (0.0625, 0.25, 0.5, 0.75, 0.99):
        raw(
            f"truncated-{fraction}.safetensors",
            data[: int(len(data) * fraction)],
            "not a valid safetensors",
        )
    return files


def test_tampered_safetensors_are_refused_naming_what_is_wrong(tmp_path: Path, capsys) -> None:
    files = _tampered_files(tmp_path)
    assert len(files) == 38
    for name, (path, words) in files.items():
        with pytest.raises(CheckpointError) as excinfo:
            load_model(path)
        message = str(excinfo.value)
        assert words in message, (name, message)
        assert str(path) in message and "\n" not in message, (name, message)
    # the same through the command line: exit 1, one line naming the file, no traceback
    for name in (
        "length-huge.safetensors",
        "metadata-a-string.safetensors",
        "float8-weights.safetensors",
    ):
        code = main(["eval", str(files[name][0])])
        err = capsys.readouterr().err
        assert code == 1 and err.count("\n") == 1 and str(files[name][0]) in err, err


def test_lower_precision_weights_load_as_float32(tmp_path: Path) -> None:
    good = _good_safetensors(tmp_path)
    record = json.dumps(_metadata_of(good))
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        path = tmp_path / f"{dtype}.safetensors".replace("torch.", "")
        save_file(
            {k: v.to(dtype) for k, v in load_file(str(good)).items()},
            str(path),
            metadata={"img2img": record},
        )
        model = load_model(path)
        assert all(p.dtype == torch.float32 for p in model.parameters())


# == a process killed while saving =================================================================

_SAVER = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import torch

    from img2img_filters.checkpoint import atomic_write, save_model
    from img2img_filters.models import create_img2img_model

    folder, generation = Path(sys.argv[1]), int(sys.argv[2])
    model = create_img2img_model(3, 1, "linear", kernel_size=15, depth=3, width=40)
    print("ready", flush=True)
    while True:
        generation += 1
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.fill_(generation)
        save_model(model, folder / "model.safetensors", generation=generation)
        save_model(model, folder / "model.pt", generation=generation)
        state = {"generation": torch.tensor(generation), "model": model.state_dict()}
        atomic_write(folder / "state.pt", lambda tmp: torch.save(state, tmp))
        print(generation, flush=True)
    """
)


def _check_generation(folder: Path) -> dict[str, int]:
    """Every file loads, complete, and its weights are those of the generation it records."""
    generations = {}
    for name in ("model.safetensors", "model.pt"):
        model = load_model(folder / name)
        generation = model.metadata["generation"]
        for key, value in model.state_dict().items():
            assert torch.equal(value, torch.full_like(value, generation)), (name, key)
        generations[name] = generation
    state = safe_torch_load(folder / "state.pt")
    generation = int(state["generation"])
    for key, value in state["model"].items():
        assert torch.equal(value, torch.full_like(value, generation)), ("state.pt", key)
    generations["state.pt"] = generation
    return generations


@pytest.mark.timeout(180)
def test_saves_killed_at_random_moments_leave_the_previous_files_loadable(tmp_path: Path) -> None:
    """SIGKILL at random moments of a loop of saves (model .safetensors and .pt, training state)."""
    script = tmp_path / "saver.py"
    script.write_text(_SAVER)
    folder = tmp_path / "run"
    folder.mkdir()
    rng = np.random.default_rng(20240611)
    previous = {"model.safetensors": 0, "model.pt": 0, "state.pt": 0}
    # At least 5 trials, and more (up to 15) until a kill has landed inside a write: a
    # random moment falls inside one about 60% of the time.
    trial, killed_mid_write = 0, 0
    while trial < 5 or (killed_mid_write == 0 and trial < 15):
        start = max(previous.values())
        child = subprocess.Popen(
            [sys.executable, str(script), str(folder), str(start)],
            stdout=subprocess.PIPE,
            text=True,
            env=_child_env(),
        )
        assert child.stdout.readline().strip() == "ready"
        completed = []
        if trial == 0:  # wait for a first complete generation: there must be a previous file
            completed.append(int(child.stdout.readline()))
        time.sleep(float(rng.uniform(0.0, 0.4)))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        assert child.returncode == -signal.SIGKILL
        completed += [int(line) for line in child.stdout.read().split()]
        child.stdout.close()
        generations = _check_generation(folder)
        for name, generation in generations.items():
            assert generation >= previous[name], name  # never older than what was there
            # at most the generation being written when the process died
            assert generation <= start + len(completed) + 1, name
            if completed:
                assert generation >= completed[-1], name  # what was reported done is there
        previous = generations
        leftovers = _temporary_files(folder)
        killed_mid_write += bool(leftovers)
        for name in leftovers:  # a killed writer cannot clean up; the next save does not need to
            (folder / name).unlink()
        trial += 1
    assert max(previous.values()) >= 1
    # At least one kill landed while a file was being written (its temporary file was left).
    assert killed_mid_write >= 1


# == the disk fills up while saving ================================================================


def _half_then_enospc(real):
    """A save function that writes half the bytes the real one writes, then fails as a full disk."""

    is_torch = real is torch.save  # decided now: torch.save is the patched function later

    def save(content, target, *args, **kwargs) -> None:
        buffer = io.BytesIO()
        if is_torch:
            real(content, buffer, *args, **kwargs)
            data = buffer.getvalue()
        else:  # safetensors.torch.save_file(tensors, filename, metadata=...)
            data = safetensors.torch.save(content, metadata=kwargs.get("metadata"))
        with open(target, "wb") as stream:
            stream.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    return save


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_disk_full_while_saving_a_model_keeps_the_previous_one(
    tmp_path: Path, monkeypatch, suffix
) -> None:
    path = save_model(
        create_img2img_model(3, 1, "linear"), tmp_path / f"model{suffix}", generation=1
    )
    before = path.read_bytes()
    if suffix == ".pt":
        monkeypatch.setattr(torch, "save", _half_then_enospc(torch.save))
    else:
        monkeypatch.setattr(
            safetensors.torch, "save_file", _half_then_enospc(safetensors.torch.save_file)
        )
    with pytest.raises(OSError) as excinfo:
        save_model(create_img2img_model(3, 1, "linear"), path, generation=2)
    assert excinfo.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert read_metadata(path)["generation"] == 1
    load_model(path)
    assert _leftovers(tmp_path) == [path.name]  # no temporary file left behind


class _PairList(torch.utils.data.Dataset):
    """``n`` random ``(input (3, 12, 12), target (1, 12, 12))`` pairs."""

    def __init__(self, n: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.inputs = torch.rand(n, 3, 12, 12, generator=generator)
        self.targets = self.inputs.mean(dim=1, keepdim=True)

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int):
        return self.inputs[index], self.targets[index]


def test_disk_full_while_saving_the_training_state_keeps_the_previous_state(
    tmp_path: Path, monkeypatch
) -> None:
    """The state of epoch 1 survives a failed save in epoch 2, and training resumes from it."""
    state, best = tmp_path / "state.pt", tmp_path / "model.safetensors"
    options = dict(max_epochs=3, batch_size=4, learning_rate=0.01, progress=False, seed=3)
    calls = {"n": 0}
    real_save = torch.save
    failing = _half_then_enospc(real_save)

    def save_twice_then_fail(content, target, *args, **kwargs):
        calls["n"] += 1
        return (failing if calls["n"] == 2 else real_save)(content, target, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_twice_then_fail)
    torch.manual_seed(0)
    model = create_img2img_model(3, 1, "linear", kernel_size=3)
    with pytest.raises(OSError) as excinfo:
        train_model(
            model,
            _PairList(8),
            _PairList(4, 1),
            save_best=True,
            save_path=best,
            state_path=str(state),
            **options,
        )
    assert excinfo.value.errno == errno.ENOSPC and calls["n"] == 2
    monkeypatch.undo()
    saved = safe_torch_load(state)
    assert json.loads(saved["progress"])["epoch"] == 1
    assert read_metadata(best)["epoch"] in (1, 2)  # the best model is complete too
    load_model(best)
    assert _leftovers(tmp_path) == ["model.safetensors", "state.pt"]
    # Resuming from the surviving state gives what an uninterrupted run gives.
    torch.manual_seed(0)
    reference = create_img2img_model(3, 1, "linear", kernel_size=3)
    expected = train_model(reference, _PairList(8), _PairList(4, 1), **options)
    resumed = create_img2img_model(3, 1, "linear", kernel_size=3)
    losses = train_model(resumed, _PairList(8), _PairList(4, 1), resume=str(state), **options)
    assert losses == expected


def test_disk_full_while_writing_images_and_run_files(tmp_path: Path, monkeypatch) -> None:
    from img2img_filters.imageio import read_image, write_image

    image = write_image(tmp_path / "out.png", np.full((4, 5, 3), 0.5))
    folder = RunFolder(tmp_path)
    folder.write_json("metrics.json", {"psnr": 40.0})
    real_write_bytes = Path.write_bytes

    def half_write_bytes(self, data):
        real_write_bytes(self, bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", half_write_bytes)
    with pytest.raises(OSError, match="No space left"):
        write_image(tmp_path / "out.png", np.zeros((4, 5, 3)))
    monkeypatch.undo()
    real_write_text = Path.write_text

    def half_write_text(self, text, *args, **kwargs):
        real_write_text(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", half_write_text)
    with pytest.raises(OSError, match="No space left"):
        folder.write_json("metrics.json", {"psnr": 1.0})
    monkeypatch.undo()
    np.testing.assert_array_equal(read_image(image), np.full((4, 5, 3), 128, np.uint8))
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"psnr": 40.0}
    assert _leftovers(tmp_path) == ["metrics.json", "out.png"]


# == training that diverges ========================================================================


def _inf_from_step(model: nn.Module, step: int) -> nn.Module:
    """Make the model's training output +Inf from its ``step``-th training forward pass on."""
    calls = {"n": 0}

    def hook(module: nn.Module, inputs, output: torch.Tensor):
        if module.training:
            calls["n"] += 1
            if calls["n"] >= step:
                return output + float("inf")
        return None

    model.register_forward_hook(hook)
    return model


@pytest.mark.parametrize("loss", ["l1", "mse"])
def test_inf_loss_stops_with_epoch_and_step_and_keeps_the_last_good_files(
    tmp_path: Path, loss: str
) -> None:
    state, best = tmp_path / "state.pt", tmp_path / "model.safetensors"
    # 8 items in batches of 3: 3 steps per epoch, so the 6th step is epoch 2, step 3.
    model = _inf_from_step(create_img2img_model(3, 1, "linear", kernel_size=3), step=6)
    with pytest.raises(TrainingDivergedError) as excinfo:
        train_model(
            model,
            _PairList(8),
            _PairList(4, 1),
            max_epochs=4,
            batch_size=3,
            loss=loss,
            save_best=True,
            save_path=best,
            state_path=str(state),
            progress=False,
        )
    message = str(excinfo.value)
    assert "the training loss became inf at epoch 2, step 3" in message and "\n" not in message
    saved = safe_torch_load(state)
    assert json.loads(saved["progress"])["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in saved["model"].values())
    assert read_metadata(best)["epoch"] == 1
    loaded = load_model(best)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, saved["model"][key]), key  # the state and the best model agree
    assert _leftovers(tmp_path) == ["model.safetensors", "state.pt"]


def _cli_train(out: Path, *extra: str) -> list[str]:
    return [
        "train", "--data", "samples", "--arch", "linear", "--limit", "16", "--batch-size", "4",
        "--patience", "0", "--no-figures", "--no-progress", "--device", "cpu", "--out", str(out),
        *extra,
    ]  # fmt: skip


def test_cli_training_that_diverges_is_one_line_and_keeps_the_files_before(
    tmp_path: Path, capsys
) -> None:
    """``--lr 1e17 --loss mse`` overflows float32 at the second step, every time.

    Adam moves each weight by about the learning rate per step whatever the gradient,
    so a huge rate diverges at once (step 2) rather than epochs later: the files
    "from before" are those of an earlier run in the same folder, which a diverging
    ``--overwrite`` run must leave loadable.
    """
    out = tmp_path / "run"
    assert main(_cli_train(out, "--epochs", "2")) == 0
    capsys.readouterr()
    model_before = (out / "model.safetensors").read_bytes()
    state_before = (out / "state.pt").read_bytes()
    messages = []
    for _ in range(2):  # deterministic: the same step each time
        code = main(
            _cli_train(out, "--epochs", "3", "--lr", "1e17", "--loss", "mse", "--overwrite")
        )
        err = capsys.readouterr().err
        assert code == 1
        # the run's notices come first, through logging; the error is the one last line
        errors = [line for line in err.splitlines() if line.startswith("img2img: error: ")]
        assert errors == [err.splitlines()[-1]] and "Traceback" not in err
        messages.append(errors[0])
    assert messages[0] == messages[1]
    assert "the training loss became inf at epoch 1, step 2" in messages[0]
    assert (out / "model.safetensors").read_bytes() == model_before
    assert (out / "state.pt").read_bytes() == state_before
    assert load_model(out / "model.safetensors").metadata["method"] == "gradient"
    state = safe_torch_load(out / "state.pt")
    assert json.loads(state["progress"])["epoch"] == 2
    assert json.loads(state["train_config"])["learning_rate"] == 0.001  # the first run's
    assert not (out / LOCK_FILE).exists()  # the lock is released on failure
    assert not _temporary_files(out)


def test_cli_refuses_an_infinite_learning_rate(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(_cli_train(tmp_path / "run", "--epochs", "1", "--lr", "inf"))
    assert excinfo.value.code == 2
    assert "--lr" in capsys.readouterr().err


# == two runs writing to one folder ================================================================


@pytest.mark.timeout(180)
def test_a_second_run_into_a_locked_folder_is_refused_and_a_dead_runs_lock_is_taken_over(
    tmp_path: Path, capsys
) -> None:
    out = tmp_path / "run"
    argv = [*_cli_train(out, "--epochs", "100000")]
    argv[argv.index("--arch") + 1] = "study"  # a slow network: the run stays busy
    child = subprocess.Popen(
        [sys.executable, "-m", "img2img_filters", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_child_env(),
    )
    try:
        lock = out / LOCK_FILE
        deadline = time.monotonic() + 120
        while not (lock.is_file() and lock.read_text().split()[:1] == [str(child.pid)]):
            assert child.poll() is None, "the first run ended early"
            assert time.monotonic() < deadline, "the first run never took the lock"
            time.sleep(0.05)
        for extra in (["--overwrite"], []):
            code = main(_cli_train(out, "--epochs", "1", *extra))
            err = capsys.readouterr().err
            assert code == 1
            assert err.startswith("img2img: error: ") and err.count("\n") == 1, err
            if extra:
                assert f"is in use by process {child.pid} on {socket.gethostname()}" in err
            else:  # refused either way: the folder holds a model, or is locked
                assert "in use by process" in err or "already holds a model" in err
        assert child.poll() is None  # the first run was not disturbed
    finally:
        child.kill()
        child.wait(timeout=30)
    assert lock.read_text().split()[0] == str(child.pid)  # a stale lock: its process is dead
    assert main(_cli_train(out, "--epochs", "1", "--overwrite")) == 0
    assert not lock.exists()
    load_model(out / "model.safetensors")


@pytest.mark.parametrize(
    ("content", "taken_over"),
    [
        ("999999999 {host}", True),  # beyond the largest pid: dead
        ("", True),  # empty: a writer died before writing its pid
        ("not-a-pid {host}", True),
        ("{pid} {host}", False),  # this very process: alive
        ("1 another-host.example", False),  # another machine: assumed alive
    ],
)
def test_lock_files_of_dead_and_live_owners(tmp_path: Path, content: str, taken_over: bool) -> None:
    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    lock = folder.file(LOCK_FILE)
    lock.write_text(content.format(host=socket.gethostname(), pid=os.getpid()))
    if taken_over:
        with folder.lock():
            assert lock.read_text() == f"{os.getpid()} {socket.gethostname()}"
        assert not lock.exists()
    else:
        with pytest.raises(RuntimeError, match="is in use by process") as excinfo, folder.lock():
            pass
        assert "\n" not in str(excinfo.value) and "choose another --out" in str(excinfo.value)
        assert lock.exists()  # a live owner's lock is left alone


# == hostile archives ==============================================================================


def _zip(path: Path, members: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for info, data in members:
            archive.writestr(info, data)
    return path


def _lie_about_sizes(path: Path, size: int, crc: int) -> None:
    """Rewrite every member's uncompressed size and CRC, in the local and central headers."""
    data = bytearray(path.read_bytes())
    for signature, crc_at, size_at in ((b"PK\x03\x04", 14, 22), (b"PK\x01\x02", 16, 24)):
        start = 0
        while (start := data.find(signature, start)) != -1:
            data[start + crc_at : start + crc_at + 4] = struct.pack("<I", crc)
            data[start + size_at : start + size_at + 4] = struct.pack("<I", size)
            start += 4
    path.write_bytes(bytes(data))


def test_many_small_members_over_the_limit_are_refused_before_writing(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "many.zip", [(f"top/{i}.bin", b"\0" * 10_000) for i in range(50)])
    with pytest.raises(
        UnsafeArchiveError, match="would expand to 500,000 bytes, more than the limit of 100,000"
    ):
        extract_zip(archive, tmp_path / "out", max_total_bytes=100_000)
    assert _leftovers(tmp_path) == ["many.zip"]


def test_a_bomb_lying_about_its_sizes_writes_no_more_than_it_declares(tmp_path: Path) -> None:
    """Declared sizes of 1,000 bytes with a matching CRC, 4 MB of data behind: 1,000 bytes written."""
    archive = _zip(tmp_path / "liar.zip", [("top/zeros.bin", b"\0" * 4_000_000)])
    _lie_about_sizes(archive, 1000, zlib.crc32(b"\0" * 1000))
    extract_zip(archive, tmp_path / "out", max_total_bytes=5000)
    written = sum(p.stat().st_size for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert written == 1000


def test_a_bomb_lying_about_its_sizes_and_crc_is_refused(tmp_path: Path) -> None:
    archive = _zip(
        tmp_path / "liar.zip", [("top/a.bin", b"\0" * 2_000_000), ("top/b.bin", b"\1" * 2_000_000)]
    )
    _lie_about_sizes(archive, 10, 0)
    with pytest.raises(ValueError, match="corrupt"):
        extract_zip(archive, tmp_path / "out", max_total_bytes=100)
    assert _leftovers(tmp_path) == ["liar.zip"]


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        ("//server/share/evil.txt", "absolute"),
        ("\\\\server\\share\\evil.txt", "absolute"),
        ("./../evil.txt", "'..'"),
        ("top/./../../evil.txt", "'..'"),
        ("top/..", "'..'"),
        ("D:\\evil.txt", "absolute"),
    ],
)
def test_more_escaping_paths(tmp_path: Path, member: str, reason: str) -> None:
    archive = _zip(
        tmp_path / "a.zip", [("top/good.txt", b"fine"), (zipfile.ZipInfo(member), b"evil")]
    )
    with pytest.raises(UnsafeArchiveError, match=reason):
        extract_zip(archive, tmp_path / "deep" / "out")
    assert _leftovers(tmp_path) == ["a.zip"]


@pytest.mark.parametrize("kind", ["fifo", "device", "socket"])
def test_special_file_members_are_refused(tmp_path: Path, kind: str) -> None:
    import stat

    info = zipfile.ZipInfo("top/special")
    info.create_system = 3
    mode = {"fifo": stat.S_IFIFO, "device": stat.S_IFCHR, "socket": stat.S_IFSOCK}[kind]
    info.external_attr = (mode | 0o644) << 16
    archive = _zip(tmp_path / "a.zip", [("top/ok.txt", b"x"), (info, b"")])
    with pytest.raises(UnsafeArchiveError, match="not a regular file or folder"):
        extract_zip(archive, tmp_path / "out")
    assert _leftovers(tmp_path) == ["a.zip"]


def test_a_link_already_in_the_destination_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "top").symlink_to(outside)  # planted before the extraction
    archive = _zip(tmp_path / "a.zip", [("top/evil.txt", b"evil")])
    with pytest.raises(FileExistsError, match="already exists"):
        extract_zip(archive, dest)
    assert list(outside.iterdir()) == []


def test_a_member_where_another_needs_a_folder_is_refused(tmp_path: Path) -> None:
    """``top/a`` a file, then ``top/a/b``: one error naming the archive and member (was a raw OSError)."""
    archive = _zip(tmp_path / "a.zip", [("top/a", b"x"), ("top/a/b", b"y")])
    with pytest.raises(UnsafeArchiveError, match=r"member 'top/a/b'\) needs a folder") as excinfo:
        extract_zip(archive, tmp_path / "out")
    assert str(archive) in str(excinfo.value)
    assert _leftovers(tmp_path) == ["a.zip"]


def test_duplicate_members_are_refused(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="Duplicate name"):
        archive = _zip(tmp_path / "a.zip", [("top/a", b"first"), ("top/a", b"second")])
    with pytest.raises(UnsafeArchiveError, match="appears twice"):
        extract_zip(archive, tmp_path / "out")
    assert _leftovers(tmp_path) == ["a.zip"]


# == misbehaving download servers ==================================================================

PAYLOAD = bytes(range(256)) * 300  # 76,800 bytes
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()


class _Server(http.server.ThreadingHTTPServer):
    """A local server whose answers follow a script: one behaviour per request, the last repeated."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.body = PAYLOAD
        self.script: list[str] = ["ok"]
        self.log: list[tuple[str | None, str]] = []  # (Range header, behaviour)
        self.lock = threading.Lock()

    def handle_error(self, request, client_address) -> None:
        pass  # clients that give up are part of the tests

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/file.zip"

    def next_behaviour(self, ranged: str | None) -> str:
        with self.lock:
            behaviour = self.script.pop(0) if len(self.script) > 1 else self.script[0]
            self.log.append((ranged, behaviour))
            return behaviour


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format, *args) -> None:
        pass

    def do_GET(self) -> None:
        ranged = self.headers.get("Range")
        behaviour = self.server.next_behaviour(ranged)
        if behaviour.isdigit():
            self.send_error(int(behaviour))
            return
        body, start = self.server.body, 0
        if ranged and "norange" not in behaviour:
            start = int(ranged.split("=")[1].split("-")[0])
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        rest = body[start:]
        declared = {"long": len(rest) + 5000, "short": len(rest) // 2}.get(behaviour, len(rest))
        self.send_header("Content-Length", str(declared))
        self.end_headers()
        if behaviour.startswith(("drop", "stall")):
            self.wfile.write(rest[: len(rest) // 3])
            self.wfile.flush()
            if behaviour == "stall":
                time.sleep(1.0)  # longer than the client's timeout
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(rest)
        if behaviour == "long":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def server() -> Iterator[_Server]:
    httpd = _Server()
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_server_that_drops_every_time_fails_cleanly_then_resumes(
    server: _Server, tmp_path: Path
) -> None:
    server.script = ["drop"]
    dest = tmp_path / "file.zip"
    with pytest.raises(DownloadError, match="failed after 4 attempts") as excinfo:
        download_file(server.url, dest, PAYLOAD_MD5, retries=3, backoff=0, chunk_size=1024)
    assert "connection" in str(excinfo.value) and "kept to resume" in str(excinfo.value)
    assert not dest.exists()  # nothing under the final name
    part = tmp_path / "file.zip.part"
    size = part.stat().st_size
    assert 0 < size < len(PAYLOAD)
    assert part.read_bytes() == PAYLOAD[:size]  # the resumed pieces fit together
    assert [r is not None for r, _ in server.log] == [False, True, True, True]
    server.script = ["ok"]
    download_file(server.url, dest, PAYLOAD_MD5, backoff=0)
    assert server.log[-1] == (f"bytes={size}-", "ok")  # resumed, not restarted
    assert dest.read_bytes() == PAYLOAD and _leftovers(tmp_path) == ["file.zip"]


def test_a_server_that_drops_every_time_and_ignores_ranges(server: _Server, tmp_path: Path) -> None:
    server.script = ["drop-norange"]
    dest = tmp_path / "file.zip"
    with pytest.raises(DownloadError, match="failed after 3 attempts"):
        download_file(server.url, dest, PAYLOAD_MD5, retries=2, backoff=0, chunk_size=1024)
    assert not dest.exists()
    part = tmp_path / "file.zip.part"
    assert part.read_bytes() == PAYLOAD[: len(PAYLOAD) // 3]  # restarted each time, never appended
    server.script = ["norange"]  # then a full answer that still ignores Range
    download_file(server.url, dest, PAYLOAD_MD5, backoff=0)
    assert dest.read_bytes() == PAYLOAD and _leftovers(tmp_path) == ["file.zip"]


def test_a_server_claiming_more_bytes_than_it_sends(server: _Server, tmp_path: Path) -> None:
    server.script = ["long"]
    dest = tmp_path / "file.zip"
    with pytest.raises(DownloadError, match="attempts"):
        download_file(server.url, dest, PAYLOAD_MD5, retries=3, backoff=0)
    assert not dest.exists()


def test_a_server_claiming_fewer_bytes_than_it_sends(server: _Server, tmp_path: Path) -> None:
    server.script = ["short"]
    dest = tmp_path / "file.zip"
    with pytest.raises(DownloadError, match="checksum mismatch") as excinfo:
        download_file(server.url, dest, PAYLOAD_MD5, retries=1, backoff=0)
    assert "removed" in str(excinfo.value)
    assert _leftovers(tmp_path) == []


def test_a_server_that_stalls_mid_body_is_timed_out_and_resumed(
    server: _Server, tmp_path: Path
) -> None:
    server.script = ["stall", "ok"]
    dest = tmp_path / "file.zip"
    download_file(server.url, dest, PAYLOAD_MD5, retries=2, backoff=0, timeout=0.3, chunk_size=1024)
    assert dest.read_bytes() == PAYLOAD
    (first, _), (second, _) = server.log
    assert first is None and second is not None and second != "bytes=0-"


def test_a_server_that_always_stalls_fails_with_a_timeout(server: _Server, tmp_path: Path) -> None:
    server.script = ["stall"]
    dest = tmp_path / "file.zip"
    with pytest.raises(DownloadError, match="timed out"):
        download_file(
            server.url, dest, PAYLOAD_MD5, retries=1, backoff=0, timeout=0.3, chunk_size=1024
        )
    assert not dest.exists()


@pytest.mark.parametrize(("status", "attempts"), [("403", 1), ("410", 1), ("503", 3), ("429", 3)])
def test_http_errors(server: _Server, tmp_path: Path, status: str, attempts: int) -> None:
    server.script = [status]
    with pytest.raises(DownloadError, match=f"HTTP {status}") as excinfo:
        download_file(server.url, tmp_path / "file.zip", PAYLOAD_MD5, retries=2, backoff=0)
    assert "\n" not in str(excinfo.value)
    assert len(server.log) == attempts  # client errors are not retried, transient ones are
    assert _leftovers(tmp_path) == []


def test_a_stale_corrupt_partial_file_is_detected_and_replaced(
    server: _Server, tmp_path: Path
) -> None:
    dest = tmp_path / "file.zip"
    (tmp_path / "file.zip.part").write_bytes(b"\xff" * 1000)  # not the first 1000 bytes
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download_file(server.url, dest, PAYLOAD_MD5, backoff=0)
    assert _leftovers(tmp_path) == []  # the bad data is gone: the next try starts afresh
    download_file(server.url, dest, PAYLOAD_MD5, backoff=0)
    assert dest.read_bytes() == PAYLOAD
    larger = tmp_path / "other.zip.part"
    larger.write_bytes(b"\0" * (len(PAYLOAD) + 10))  # longer than the file: HTTP 416, restart
    download_file(server.url, tmp_path / "other.zip", PAYLOAD_MD5, backoff=0)
    assert (tmp_path / "other.zip").read_bytes() == PAYLOAD


def test_a_tiny_imagenet_download_that_is_not_a_zip(
    server: _Server, tmp_path: Path, monkeypatch
) -> None:
    """A captive portal's HTML page instead of the archive: refused, nothing left that looks complete."""
    from img2img_filters.data import download_tiny_imagenet

    monkeypatch.setattr(
        download_module, "time", type("T", (), {"sleep": staticmethod(lambda s: None)})
    )
    server.body = b"<html><body>Please log in to the network</body></html>"
    root = tmp_path / "data" / "tiny-imagenet-200"
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download_tiny_imagenet(root, url=server.url, progress=False)  # the official MD5
    assert _leftovers(tmp_path / "data") == []
    with pytest.raises(ValueError, match=r"not a valid zip file .*it was removed"):
        download_tiny_imagenet(root, url=server.url, md5=None, progress=False)
    assert _leftovers(tmp_path / "data") == []  # not kept to be taken as downloaded next time
