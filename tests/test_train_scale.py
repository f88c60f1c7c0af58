"""Training across processes: SIGKILL and resume, Ctrl-C from the command line, two gloo ranks.

Every test here runs real subprocesses (``python``, ``python -m img2img_filters``,
``python -m torch.distributed.run``) on small real photos, so each takes a few
seconds; together they stay well under a minute on two cores.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from img2img_filters.checkpoint import load_model, safe_torch_load

pytestmark = pytest.mark.slow

#: Every subprocess gets the same environment (threads included), so that float results can
#: be compared bit for bit.
ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1"}

TRAINER = textwrap.dedent(
    """
    import sys, time, json
    import numpy as np, torch
    torch.set_num_threads(2)
    from img2img_filters.data import FilteredDataset
    from img2img_filters.models import create_img2img_model
    from img2img_filters.train import train_model

    photos_file, state, result, marker, mode = sys.argv[1:6]
    photos = np.load(photos_file)

    class Pausing:
        '''The training photos; in mode "pause" it stops for good in epoch 2, batch 3.'''

        def __init__(self, dataset):
            self.dataset, self.epoch, self.calls = dataset, 0, 0
            self.filter, self.source = dataset.filter, dataset.source

        def set_epoch(self, epoch):
            self.epoch, self.calls = epoch, 0

        def __len__(self):
            return len(self.dataset)

        def __getitem__(self, index):
            return self.dataset[index]

        def batch(self, positions, device=None):
            self.calls += 1
            if mode == "pause" and self.epoch == 2 and self.calls == 3:
                open(marker, "w").close()
                time.sleep(600)  # killed here, mid-epoch
            return self.dataset.batch(positions, device)

    train = Pausing(FilteredDataset(photos, "study-sobel", indices=np.arange(48), source="t"))
    val = FilteredDataset(photos, "study-sobel", indices=np.arange(48, 64), source="t")
    torch.manual_seed(0 if mode != "resume" else 99)  # resume must overwrite the weights
    model = create_img2img_model(3, 1, "study")
    losses = train_model(
        model, train, val, max_epochs=4, batch_size=8, learning_rate=0.01, seed=3,
        progress=False, device="cpu", state_path=state,
        resume=state if mode == "resume" else None,
    )
    last = torch.load(state, weights_only=True)["model"]
    torch.save({"best": model.state_dict(), "last": last, "losses": losses}, result)
    """
)


@pytest.fixture(scope="module")
def photos_file(train_photos: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("photos") / "photos.npy"
    np.save(path, train_photos[:64])
    return path


def _run_trainer(script: Path, photos: Path, folder: Path, mode: str) -> subprocess.Popen:
    args = [
        str(photos),
        str(folder / "state.pt"),
        str(folder / f"{mode}.pt"),
        str(folder / "marker"),
    ]
    return subprocess.Popen(
        [sys.executable, str(script), *args, mode],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for the rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _finish(process: subprocess.Popen, timeout: float = 120) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output
    return output


def test_sigkill_mid_epoch_then_resume_gives_identical_weights(
    photos_file: Path, tmp_path: Path
) -> None:
    script = tmp_path / "trainer.py"
    script.write_text(TRAINER)
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    reference_dir.mkdir()
    killed_dir.mkdir()

    reference = _run_trainer(script, photos_file, reference_dir, "plain")
    paused = _run_trainer(script, photos_file, killed_dir, "pause")
    _finish(reference)
    marker = killed_dir / "marker"
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert paused.poll() is None, paused.communicate()[0]
        assert time.monotonic() < deadline, "the training never reached epoch 2"
        time.sleep(0.05)
    paused.send_signal(signal.SIGKILL)  # mid-epoch 2: epoch 1's state is on disk
    paused.wait(timeout=30)
    assert paused.returncode == -signal.SIGKILL
    saved = safe_torch_load(killed_dir / "state.pt")
    assert json.loads(saved["progress"])["epoch"] == 1

    _finish(_run_trainer(script, photos_file, killed_dir, "resume"))
    expected = torch.load(reference_dir / "plain.pt", weights_only=True)
    resumed = torch.load(killed_dir / "resume.pt", weights_only=True)
    assert resumed["losses"] == expected["losses"]
    for which in ("best", "last"):
        for key, value in expected[which].items():
            assert torch.equal(resumed[which][key], value), (which, key)


def test_ctrl_c_exits_130_with_a_readable_resumable_state(mini_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    env = {**ENV, "IMG2IMG_CACHE": str(tmp_path / "cache")}
    common = ["--no-progress", "--no-figures", "--device", "cpu"]
    args = ["--data", str(mini_root), "--limit", "40", "--arch", "study", "--epochs", "40"]
    args += ["--batch-size", "8", "--patience", "0", "--out", str(out), *common]
    process = subprocess.Popen(
        [sys.executable, "-m", "img2img_filters", "train", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    state = out / "state.pt"
    deadline = time.monotonic() + 120
    while not state.exists():
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, "no epoch finished"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 130, output
    assert "interrupted" in output
    saved = safe_torch_load(state)
    done = json.loads(saved["progress"])["epoch"]
    assert 1 <= done < 40
    assert not (out / ".lock").exists()

    resumed = subprocess.run(
        [sys.executable, "-m", "img2img_filters", "train", "--resume", str(out), *common],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    history = (out / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 40  # every epoch, the interrupted ones included
    assert json.loads(safe_torch_load(state)["progress"])["epoch"] == 40
    assert load_model(out / "model.safetensors").config["arch"] == "study"


DISTRIBUTED = textwrap.dedent(
    """
    import os, sys, json
    import torch
    torch.set_num_threads(1)  # two processes on two cores
    import img2img_filters.checkpoint, img2img_filters.fileio, img2img_filters.train.state
    from img2img_filters.distributed import cleanup_distributed
    from img2img_filters.runs import DataConfig, ModelConfig, train_run

    root, out, log_dir, compiled = sys.argv[1:5]
    rank = int(os.environ.get("RANK", "0"))
    writes = []

    def logged(original):
        def write(path, *args, **kwargs):
            writes.append(str(path))
            return original(path, *args, **kwargs)
        return write

    for module in (img2img_filters.checkpoint, img2img_filters.fileio, img2img_filters.train.state):
        module.atomic_write = logged(module.atomic_write)
    import img2img_filters.backends.cpu.engines
    trainers = []

    class Recorded(img2img_filters.backends.cpu.engines.FusedTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            trainers.append(self)

    img2img_filters.backends.cpu.engines.FusedTrainer = Recorded
    result = train_run(
        out,
        DataConfig(data=root, limit=48, seed=1),
        ModelConfig(arch="study"),
        {"max_epochs": 2, "batch_size": 12, "device": "cpu", "progress": False, "seed": 5,
         "compile": compiled == "compile"},
        figures=False,
        log=lambda line: None,
    )
    torch.save(
        {"weights": result.model.state_dict(), "train": result.train_losses,
         "val": result.val_losses, "writes": writes,
         "fused": [trainer.failed is None and bool(trainer._compiled) for trainer in trainers]},
        os.path.join(log_dir, f"rank{rank}.pt"),
    )
    cleanup_distributed()
    """
)


@pytest.mark.parametrize("compiled", ["eager", "compile"])
def test_two_gloo_processes_match_one_process(mini_root: Path, tmp_path: Path, compiled) -> None:
    """DDP (or, with compile=True, the fused loops and averaged gradients) on two ranks."""
    script = tmp_path / "distributed.py"
    script.write_text(DISTRIBUTED)
    env = {**ENV, "IMG2IMG_CACHE": str(tmp_path / "cache")}
    logs = {name: tmp_path / f"logs-{name}" for name in ("two", "one")}
    for folder in logs.values():
        folder.mkdir()
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    launcher += ["--master_port", str(_free_port())]

    def arguments(name: str) -> list[str]:
        """The script's arguments for the run of ``name`` ("two" or "one" processes)."""
        run = "run2" if name == "two" else "run1"
        return [str(script), str(mini_root), str(tmp_path / run), str(logs[name]), compiled]

    two = subprocess.Popen(
        [*launcher, *arguments("two")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    one = subprocess.run(
        [sys.executable, *arguments("one")],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert one.returncode == 0, one.stdout + one.stderr
    _finish(two, timeout=240)

    rank0 = torch.load(logs["two"] / "rank0.pt", weights_only=True)
    rank1 = torch.load(logs["two"] / "rank1.pt", weights_only=True)
    single = torch.load(logs["one"] / "rank0.pt", weights_only=True)
    fused = [True] if compiled == "compile" else []  # one FusedTrainer that compiled, or none
    assert rank0["fused"] == rank1["fused"] == single["fused"] == fused
    for key, value in rank0["weights"].items():
        assert torch.equal(rank1["weights"][key], value), key  # the ranks stay in step
        torch.testing.assert_close(value, single["weights"][key], rtol=1e-5, atol=1e-6)
    assert rank0["train"] == rank1["train"] and rank0["val"] == rank1["val"]
    np.testing.assert_allclose(rank0["train"], single["train"], rtol=1e-6)
    np.testing.assert_allclose(rank0["val"], single["val"], rtol=1e-6)
    # Rank 0 wrote the run folder (state, checkpoint, config, history, metrics); rank 1 nothing.
    written = {Path(p).name for p in rank0["writes"]}
    assert {
        "state.pt",
        "model.safetensors",
        "config.json",
        "history.csv",
        "metrics.json",
    } <= written
    assert rank1["writes"] == []
    assert (tmp_path / "run2" / "metrics.json").is_file()
    assert sorted(p.name for p in (tmp_path / "run2").iterdir()) == sorted(
        p.name for p in (tmp_path / "run1").iterdir()
    )
