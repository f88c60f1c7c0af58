"""Training throughput: ``train_model`` against the study's own training loop, in one run.

Both train the same network (``create_img2img_model(3, 1, arch)``) on the same
real photos (the mini Tiny ImageNet's training JPEGs, 64x64) towards the same
target (``study-sobel``) with the study's recipe: L1 loss, Adam at 1e-3, cosine
annealing, a validation pass every epoch.

* **img2img**: ``train_model(model, train, val, batch_size=128)`` on
  :class:`~img2img_filters.data.FilteredDataset` s: uint8 photos, targets made batch by
  batch by the filter, on the CPU.
* **the study's loop** (a faithful copy): a Python list of ``(input, target)``
  float tensor pairs made beforehand (not timed), a default ``DataLoader`` (its
  ``train_model`` ignored ``batch_size``: one image per step), ``nn.L1Loss``,
  ``Adam(lr=1e-3)``, ``CosineAnnealingLR``, ``loss.item()`` every step, and the
  same validation pass (one image at a time).

* **img2img compiled**: the same call with ``compile=True``: on the CPU the
  study's chain of convolutions trains as fused loops compiled by
  ``torch.compile`` (:mod:`img2img_filters.backends.cpu.fused`). Its first call compiles (or
  finds Inductor's on-disk cache); that call is the warm-up, timed and
  reported apart, not counted in the rate.

* **img2img, a longer run**: the same call with its defaults for ``--long-epochs``
  epochs (20): long enough that ``engine="auto"`` takes the fused loops (it does when
  the planned steps repay compiling), against ``engine="opencv"`` (the default
  before that choice existed) for as many epochs. Their rates include compiling.

* **img2img in several processes**: the same ``train_model`` calls (without and
  with ``compile=True``) under ``torchrun --nproc_per_node=2`` (``--processes``)
  on the same cores, each process training on its half of every batch of 128
  (gradients averaged over gloo), as the README's multi-process command runs it.

Images per second count training images over the wall time of whole epochs
(validation included, for both). The two alternate, ``--repeat`` rounds each,
and the medians are compared, so a machine busy with other work slows both
alike. A breakdown of one img2img step follows (where the time goes, with
PyTorch's own convolutions for comparison), then the memory test: a synthetic
set of 100,000 64x64 photos (tiled from the mini set and jittered, a uint8
memory map in a temporary folder) trained for one epoch in a fresh process,
whose peak resident memory (``VmHWM``, or ``ru_maxrss`` off Linux) is reported.

Usage::

    python benchmarks/train_speed.py               # 4096 images, study and can, 100k memory test
    python benchmarks/train_speed.py --small       # CI: 512 images, study only, 10k memory test
    python benchmarks/train_speed.py --images 8192 --repeat 5

Writes ``benchmarks/results/train_speed.md`` and ``.json``. ``OMP_WAIT_POLICY`` is
left as the environment sets it (OpenMP's default: idle threads spin a while, then
sleep); on a machine shared with other work, ``OMP_WAIT_POLICY=PASSIVE`` keeps idle
threads from spinning, which speeds img2img up but slows the study's loop of tiny
operations down (each waits for a sleeping thread), so the two-thread ratio depends on it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from img2img_filters.backends.cpu import FusedTrainer, fusable_chain, tiny_conv_mode, torch_threads
from img2img_filters.data import FilteredDataset, to_float
from img2img_filters.models import create_img2img_model
from img2img_filters.train import train_model

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MINI_ROOT = Path(
    os.environ.get("IMG2IMG_MINI_ROOT", ROOT.parent / "shared" / "data" / "tiny-imagenet-200-mini")
)
FILTER = "study-sobel"
BATCH = 128
MEMORY_LIMIT_MB = 2500
#: The goal for the study network: at least this many times the study's loop.
TARGET_RATIO = 10.0


def load_photos(count: int) -> tuple[np.ndarray, str]:
    """``count`` real 64x64 photos, uint8 ``(count, 3, 64, 64)`` (repeated if the set is smaller)."""
    paths = sorted((MINI_ROOT / "train").glob("*/images/*.JPEG"))
    if paths:
        photos = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths[:count]]
        source = f"mini Tiny ImageNet ({MINI_ROOT.name}, train)"
    else:
        from skimage import data

        big = data.astronaut()
        rng = np.random.default_rng(0)
        photos = []
        for _ in range(min(count, 2048)):
            y, x = rng.integers(0, big.shape[0] - 64, 2)
            photos.append(big[y : y + 64, x : x + 64])
        source = "scikit-image's astronaut (random 64x64 crops)"
    stacked = np.stack(photos).transpose(0, 3, 1, 2)
    reps = -(-count // len(stacked))
    return np.ascontiguousarray(np.concatenate([stacked] * reps)[:count]), source


# -- the two training loops ------------------------------------------------------------------------


#: ``train_model`` options per network: wide networks run faster in the NHWC memory format.
OPTIONS = {"study": {}, "can": {"channels_last": True}}
#: Photos per round for each network (the wide one is about 100 times slower per photo).
IMAGES = {"study": (4096, 1024), "can": (512, 64)}


def ours(
    arch: str,
    train: FilteredDataset,
    val: FilteredDataset,
    epochs: int,
    compiled: bool = False,
    extra: dict | None = None,
) -> tuple[float, str]:
    """Images per second of ``train_model`` (``compile=True`` when ``compiled``), and its engine."""
    torch.manual_seed(0)
    model = create_img2img_model(3, 1, arch)
    start = time.perf_counter()
    result = train_model(
        model,
        train,
        val,
        max_epochs=epochs,
        batch_size=BATCH,
        learning_rate=1e-3,
        early_stopping_patience=0,
        progress=False,
        device="cpu",
        return_result=True,
        **_options(arch, compiled, extra),
    )
    return len(train) * epochs / (time.perf_counter() - start), result.engine


def study_loop(arch: str, pairs: list, val_pairs: list, epochs: int) -> float:
    """Images per second of the study's training loop (a faithful copy)."""
    torch.manual_seed(0)
    model = create_img2img_model(3, 1, arch)
    criterion = torch.nn.L1Loss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    train_loader = DataLoader(pairs)  # the study's: batch_size=1
    val_loader = DataLoader(val_pairs)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        running = 0.0
        for inputs, targets in train_loader:
            optimizer.zero_grad()
            loss = criterion(model(inputs), targets)
            loss.backward()
            optimizer.step()
            running += loss.item()
        model.eval()
        with torch.no_grad():
            val_loss = sum(criterion(model(x), y).item() for x, y in val_loader)
        scheduler.step()
        del running, val_loss
    return len(pairs) * epochs / (time.perf_counter() - start)


def _datasets(photos: np.ndarray) -> tuple[FilteredDataset, FilteredDataset]:
    """The training and validation sets every comparison uses: the first photos validate."""
    n_val = max(8, len(photos) // 64)
    train = FilteredDataset(photos, FILTER, indices=np.arange(n_val, len(photos)), source="bench")
    val = FilteredDataset(photos, FILTER, indices=np.arange(n_val), source="bench")
    return train, val


def _study_pairs(train: FilteredDataset, val: FilteredDataset, count: int) -> tuple[list, list]:
    """The study's loop's data: float pairs of the first ``count`` photos, validation in proportion."""
    count = min(count, len(train))
    pairs = [train[i] for i in range(count)]
    val_pairs = [val[i] for i in range(max(1, len(val) * count // len(train)))]
    return pairs, val_pairs


def _options(arch: str, compiled: bool, extra: dict | None = None) -> dict:
    """``train_model`` options of a row."""
    return {**OPTIONS[arch], **({"compile": True} if compiled else {}), **(extra or {})}


def compare(
    arch: str,
    photos: np.ndarray,
    study_images: int,
    repeat: int,
    compiled: bool = False,
    epochs: int = 1,
    extra: dict | None = None,
) -> dict:
    """Alternate the two loops ``repeat`` times on the same photos; medians and their ratio.

    img2img trains ``epochs`` epochs a round (with ``extra`` options), the study's loop one.
    """
    train, val = _datasets(photos)
    pairs, val_pairs = _study_pairs(train, val, study_images)
    start = time.perf_counter()
    ours(arch, FilteredDataset(photos[:512], FILTER), val, 1, compiled, extra)  # warm-up
    warm_up = time.perf_counter() - start
    study_loop(arch, pairs[:32], val_pairs[:2], 1)
    ours_rates, study_rates, engines = [], [], set()
    for _ in range(repeat):
        rate, engine = ours(arch, train, val, epochs, compiled, extra)
        ours_rates.append(rate)
        engines.add(engine)
        study_rates.append(study_loop(arch, pairs, val_pairs, 1))
        print(
            f"  {arch}{' compiled' if compiled else ''}: img2img {ours_rates[-1]:8.0f} img/s "
            f"({engine}, {epochs} epoch(s))   study's loop {study_rates[-1]:7.0f} img/s",
            flush=True,
        )
    row = _row(arch, 1, train, val, len(pairs), ours_rates, study_rates, compiled, extra)
    row.update(epochs=epochs, engine="/".join(sorted(engines)))
    if compiled:
        row["first_call_s"] = round(warm_up, 1)
    return row


def _row(
    arch: str,
    processes: int,
    train: FilteredDataset,
    val: FilteredDataset,
    study_images: int,
    ours_rates: list[float],
    study_rates: list[float],
    compiled: bool = False,
    extra: dict | None = None,
) -> dict:
    """One table row: both loops' medians over the rounds, and their ratio."""
    ours_median, study_median = statistics.median(ours_rates), statistics.median(study_rates)
    return {
        "arch": arch,
        "processes": processes,
        "train_images": len(train),
        "val_images": len(val),
        "study_images": study_images,
        "ours_images_per_s": round(ours_median),
        "study_images_per_s": round(study_median),
        "ratio": round(ours_median / study_median, 2),
        "options": _options(arch, compiled, extra),
        "ours_runs": [round(r) for r in ours_rates],
        "study_runs": [round(r) for r in study_rates],
    }


# -- several processes ----------------------------------------------------------------------------


def processes_child(path: str, result: str, compiled: bool = False) -> None:
    """One ``torchrun`` rank: a warm-up epoch, then one timed epoch; rank 0 writes the rate."""
    import torch.distributed as dist

    from img2img_filters.distributed import cleanup_distributed, setup_distributed

    rank, world, _ = setup_distributed("cpu")
    cv2.setNumThreads(torch.get_num_threads())  # OMP_NUM_THREADS, as torchrun sets it
    photos = np.load(path)
    train, val = _datasets(photos)
    ours("study", FilteredDataset(photos[:512], FILTER), val, 1, compiled)  # warm-up
    dist.barrier()
    start = time.perf_counter()
    ours("study", train, val, 1, compiled)
    dist.barrier()
    seconds = time.perf_counter() - start
    if rank == 0:
        record = {"images_per_s": len(train) / seconds, "threads": torch.get_num_threads()}
        Path(result).write_text(json.dumps({**record, "processes": world}))
    cleanup_distributed()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def compare_processes(
    photos: np.ndarray, processes: int, study_images: int, repeat: int, compiled: bool = False
) -> dict:
    """``train_model`` under ``torchrun --nproc_per_node=processes`` against the study's loop.

    Each process gets ``cores // processes`` threads (``OMP_NUM_THREADS``) and its
    share of every batch of 128; the global batch, hence the training, is the one
    of a single process. A round is one ``torchrun`` launch (its start-up and
    warm-up epoch not timed), then one round of the study's loop in this process.
    """
    train, val = _datasets(photos)
    pairs, val_pairs = _study_pairs(train, val, study_images)
    threads = max(1, (os.cpu_count() or 1) // processes)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    ours_rates, study_rates = [], []
    with tempfile.TemporaryDirectory(prefix="img2img-processes-") as folder:
        path, result = Path(folder) / "photos.npy", Path(folder) / "result.json"
        np.save(path, photos)
        for _ in range(repeat):
            launch = subprocess.run(
                [
                    *(sys.executable, "-m", "torch.distributed.run"),
                    *(f"--nproc_per_node={processes}", f"--master_port={_free_port()}"),
                    *(__file__, "--processes-child", str(path), "--result", str(result)),
                    *(["--compiled"] if compiled else []),
                ],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            if launch.returncode != 0 or not result.exists():
                raise RuntimeError(f"torchrun failed:\n{launch.stdout}\n{launch.stderr}")
            record = json.loads(result.read_text())
            result.unlink()
            ours_rates.append(record["images_per_s"])
            study_rates.append(study_loop("study", pairs, val_pairs, 1))
            print(
                f"  study{' compiled' if compiled else ''}, {processes} processes: "
                f"img2img {ours_rates[-1]:8.0f} img/s   "
                f"study's loop {study_rates[-1]:7.0f} img/s",
                flush=True,
            )
    row = _row("study", processes, train, val, len(pairs), ours_rates, study_rates, compiled)
    return {"threads": record["threads"], **row}


# -- where one step's time goes ------------------------------------------------------------------


def breakdown(photos: np.ndarray, repeat: int = 15) -> list[dict]:
    """Median milliseconds of each part of one img2img training step of 128 photos (study net)."""
    dataset = FilteredDataset(photos, FILTER)
    model = create_img2img_model(3, 1, "study")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    rows = []

    def timed(label: str, function, fast: bool) -> None:
        times = []
        for index in range(repeat + 2):
            positions = rng.permutation(len(dataset))[:BATCH]
            # as train_model runs it: one PyTorch thread around OpenCV's convolutions
            with tiny_conv_mode(fast), torch_threads(1 if fast else None):
                start = time.perf_counter()
                function(positions)
                if index >= 2:
                    times.append(time.perf_counter() - start)
        rows.append({"part": label, "ms": round(1e3 * statistics.median(times), 2)})

    def gather(positions):
        return dataset.uint8(positions)

    def inputs(positions):
        return to_float(dataset.uint8(positions))

    batch = dataset.batch(rng.permutation(len(dataset))[:BATCH])

    def step(_positions):
        optimizer.zero_grad(set_to_none=True)
        F.l1_loss(model(batch[0]), batch[1]).backward()
        optimizer.step()

    def filter_only(_positions):
        with torch.no_grad():
            dataset.filter(batch[0])

    timed("gather uint8 photos", gather, True)
    timed("gather + to float32", inputs, True)
    timed(f"targets ({FILTER})", filter_only, True)
    timed("forward + backward + Adam (OpenCV convolutions)", step, True)
    timed("forward + backward + Adam (PyTorch convolutions)", step, False)

    fused = FusedTrainer(fusable_chain(model), "l1", None)
    fused(*batch).backward()  # compiles (or finds the cache)

    def fused_step(_positions):
        optimizer.zero_grad(set_to_none=True)
        fused(*batch).backward()
        optimizer.step()

    timed("forward + backward + Adam (compile=True: fused loops)", fused_step, False)
    return rows


# -- memory ----------------------------------------------------------------------------------------


def build_synthetic(photos: np.ndarray, count: int, folder: Path) -> Path:
    """``count`` jittered copies of ``photos`` in a uint8 ``.npy`` memory map ``(count, 3, 64, 64)``."""
    path = folder / "synthetic.npy"
    images = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(count, 3, 64, 64))
    rng = np.random.default_rng(0)
    for start in range(0, count, 4096):
        end = min(count, start + 4096)
        picks = photos[rng.integers(0, len(photos), end - start)]
        shifts = rng.integers(-4, 5, 2)
        chunk = np.roll(picks, tuple(int(s) for s in shifts), axis=(2, 3))
        flips = rng.random(end - start) < 0.5
        chunk[flips] = chunk[flips][..., ::-1]
        noise = rng.integers(-3, 4, chunk.shape, dtype=np.int16)
        images[start:end] = np.clip(chunk.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    images.flush()
    del images
    return path


def memory_child(path: str, budget: float) -> None:
    """Train one epoch (or ``budget`` seconds of it) on the memory map; print JSON with peak RSS."""
    images = np.load(path, mmap_mode="r")
    n_val = 1024
    train = FilteredDataset(
        images, FILTER, indices=np.arange(n_val, len(images)), source="synthetic"
    )
    val = FilteredDataset(images, FILTER, indices=np.arange(n_val), source="synthetic")
    assert isinstance(train.images, np.memmap)
    model = create_img2img_model(3, 1, "study")
    start = time.perf_counter()
    result = train_model(
        model,
        train,
        val,
        max_epochs=1,
        batch_size=BATCH,
        progress=False,
        device="cpu",
        time_budget=budget,
        return_result=True,
    )
    seconds = time.perf_counter() - start
    peak_kb = _peak_rss_kb()
    stopped = f"{result.stopped}; engine {result.engine}"
    print(
        json.dumps(
            {
                "images": len(images),
                "seconds": round(seconds, 1),
                "stopped": stopped,
                "peak_rss_mb": round(peak_kb / 1024),
                "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            }
        )
    )


def _peak_rss_kb() -> int:
    """This process's peak resident memory in KiB: ``VmHWM`` where Linux has it, else ``ru_maxrss``.

    ``ru_maxrss`` survives ``exec``: a child started by a large parent reports the
    parent's peak. ``VmHWM`` belongs to the process's own address space.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS


def memory_test(photos: np.ndarray, count: int, budget: float) -> dict:
    """Build the synthetic set and train on it in a fresh process; its peak RSS."""
    with tempfile.TemporaryDirectory(prefix="img2img-memory-") as folder:
        start = time.perf_counter()
        path = build_synthetic(photos, count, Path(folder))
        built = time.perf_counter() - start
        result = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(path), "--budget", str(budget)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"the memory test failed:\n{result.stdout}\n{result.stderr}")
        record = json.loads(result.stdout.strip().splitlines()[-1])
    record["build_seconds"] = round(built, 1)
    record["file_mb"] = round(count * 3 * 64 * 64 / 2**20)
    record["limit_mb"] = MEMORY_LIMIT_MB
    record["within_limit"] = record["peak_rss_mb"] < MEMORY_LIMIT_MB
    return record


# -- report ----------------------------------------------------------------------------------------


def _setting(row: dict) -> str:
    """``2 thread(s)``, ``compile=True, 2 thread(s)``, ``2 processes of 1 thread(s)``..."""
    compiled = ", ".join(f"{k}={v}" for k, v in row["options"].items() if k != "channels_last")
    compiled = f"{compiled}, " if compiled else ""
    if row.get("epochs", 1) > 1:
        compiled += f"{row['epochs']} epochs, "
    if row.get("processes", 1) > 1:
        return f"{compiled}{row['processes']} processes of {row['threads']} thread(s)"
    return f"{compiled}{row['threads']} thread(s)"


def write_results(report: dict, out: Path = RESULTS) -> None:
    """``train_speed.json`` and ``.md`` in ``out`` (by default ``benchmarks/results/``)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_speed.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Training speed",
        "",
        f"`train_model` against the study's training loop on {report['photos']}, 64x64, "
        f"target `{FILTER}`, on the CPU ({report['cpus']} cores, OMP_WAIT_POLICY="
        f"{report['omp_wait_policy'] or 'unset'}; load average {report['load_before']} before, "
        f"{report['load_after']} after). Median of "
        f"{report['repeat']} alternating rounds; one epoch each, validation included. torch "
        f"{report['torch']}, OpenCV {report['opencv']}.",
        "",
        "| network | processes | threads | epochs | engine | img2img img/s | study's loop img/s "
        "| ratio | photos (img2img / study) | img2img options | img2img rounds | study rounds |",
        "|---|---:|---:|---:|---|---:|---:|---:|---|---|---|---|",
    ]
    for row in report["speed"]:
        options = ", ".join(f"{k}={v}" for k, v in row["options"].items()) or "defaults"
        lines.append(
            f"| `{row['arch']}` | {row['processes']} | {row['threads']} | "
            f"{row.get('epochs', 1)} | {row.get('engine', '')} | {row['ours_images_per_s']} | "
            f"{row['study_images_per_s']} | "
            f"**{row['ratio']}x** | {row['train_images']} / {row['study_images']} | {options} | "
            f"{row['ours_runs']} | {row['study_runs']} |"
        )
    lines += [
        "",
        f"img2img: `train_model(batch_size={BATCH})`. The study's loop takes one image per step "
        "over the first photos of the same set (its rate per image does not depend on how many).",
        "",
        "The study's loop spends its time in the fixed cost of hundreds of tiny operations per "
        "image. With two threads and `OMP_WAIT_POLICY=PASSIVE` each of them also waits for an "
        "OpenMP thread to wake up, so its two-thread rate depends on the wait policy (with "
        "`ACTIVE`, spinning threads, it runs about as fast as on one thread); the one-thread "
        "rows compare the two loops core for core. `threads` is the process's setting; "
        "`train_model` trains a network made only of few-channel convolutions (the study's) "
        "with OpenCV's threads and one PyTorch thread.",
        "",
        "The `compile=True` rows train the same network as fused loops that `torch.compile` "
        "makes from it (`img2img_filters.backends.cpu.fused`: the batch's photos laid end to end with zeros "
        "around each, every convolution a sum of shifted slices); those loops use all of the "
        "process's threads and hold the interpreter lock, so batches are made inline. The "
        "first call of such a run compiles (a C++ compiler at run time; Inductor keeps the "
        "result in its on-disk cache): it is the warm-up, not counted in the rate, and took "
        + ", ".join(
            f"{row['first_call_s']} s ({_setting(row)})"
            for row in report["speed"]
            if "first_call_s" in row
        )
        + " here, 512 photos included.",
        "",
        "The rows of several epochs train img2img that many epochs a round (the study's loop "
        "one: its rate per image does not depend on how many), compiling included: long "
        'enough that the default `engine="auto"` takes the fused loops when the planned '
        'steps repay compiling, against `engine="opencv"`, the default before.',
        "",
        "The rows with several processes run `torchrun --nproc_per_node=N` on the same cores "
        "(each process with `cores / N` threads, its share of every batch of 128, gradients "
        "averaged over gloo: by DistributedDataParallel, or after each backward pass of the "
        "fused loops with `compile=True`): the training is the single process's, but each "
        "process has its own interpreter lock, and with no core to spare each makes its batches "
        "inline instead of in a background thread. Their rates count one timed epoch per "
        "`torchrun` launch, after the processes started and trained a warm-up epoch (which "
        "compiles, with `compile=True`); the study's loop runs in this process between launches.",
        "",
        *[
            f"Target for the `study` network with {_setting(row)}: at least "
            f"{TARGET_RATIO:g}x the study's loop: "
            + ("**met**" if row["ratio"] >= TARGET_RATIO else f"**not met** ({row['ratio']}x)")
            + "."
            for row in report["speed"]
            if row["arch"] == "study"
        ],
        "",
        "## One img2img step of 128 photos (study network)",
        "",
        "| part | ms |",
        "|---|---:|",
    ]
    lines += [f"| {row['part']} | {row['ms']} |" for row in report["breakdown"]]
    memory = report["memory"]
    lines += [
        "",
        "## Memory",
        "",
        f"{memory['images']:,} synthetic 64x64 photos ({memory['file_mb']} MB uint8 memory map), "
        f"one epoch of the study network in a fresh process ({memory['seconds']} s, "
        f"{memory['stopped']}): peak resident memory **{memory['peak_rss_mb']} MB** "
        f"(limit {memory['limit_mb']} MB: {'met' if memory['within_limit'] else 'NOT met'}; "
        f"`ru_maxrss` {memory['ru_maxrss_mb']} MB, which also counts the launching process's "
        "peak). Pages of the memory map read during the epoch count in the resident memory.",
        "",
    ]
    (out / "train_speed.md").write_text("\n".join(lines))


def main() -> None:
    """Parse arguments, run the benchmark, print and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="CI size: fewer images, study only")
    parser.add_argument("--images", type=int, default=None, help="training photos (default 4096)")
    parser.add_argument("--repeat", type=int, default=None, help="alternating rounds (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch and OpenCV threads")
    parser.add_argument("--memory-images", type=int, default=None, help="synthetic set size")
    parser.add_argument(
        "--long-epochs", type=int, default=20, help="epochs of the longer default-settings rows"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the .md and .json")
    parser.add_argument(
        "--processes",
        type=int,
        default=2,
        help="torchrun processes for the last row (below 2: no such row)",
    )
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--processes-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--compiled", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=float, default=600.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.processes_child:  # threads as torchrun set them
        processes_child(args.processes_child, args.result, args.compiled)
        return
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    if args.memory_child:
        memory_child(args.memory_child, args.budget)
        return
    images = args.images or (512 if args.small else 4096)
    repeat = args.repeat or (2 if args.small else 3)
    memory_images = args.memory_images or (10_000 if args.small else 100_000)
    archs = ["study"] if args.small else ["study", "can"]
    photos, source = load_photos(images)
    report = {
        "benchmark": "train_speed",
        "photos": source,
        "filter": FILTER,
        "batch_size": BATCH,
        "repeat": repeat,
        "threads": args.threads,
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "opencv": cv2.__version__,
        "load_before": [round(v, 2) for v in os.getloadavg()],
    }
    report["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY", "")
    print(f"training speed on {images} photos ({source})")
    report["speed"] = []
    # Both loops under the same threads; also both on one thread, where the study's loop
    # (one image per step, hundreds of tiny operations) loses nothing to thread hand-offs.
    # The study network also with compile=True (fused loops).
    settings = [(arch, args.threads, False, 1, None) for arch in archs]
    settings.insert(1, ("study", args.threads, True, 1, None))
    # A longer run with the defaults (auto: the fused loops when they repay compiling),
    # against the OpenCV engine (the default before) for as many epochs.
    long = args.long_epochs
    settings[2:2] = [("study", args.threads, False, long, e) for e in ({"engine": "opencv"}, None)]
    if args.threads != 1:
        settings += [("study", 1, False, 1, None), ("study", 1, True, 1, None)]
        settings += [("study", 1, False, long, e) for e in ({"engine": "opencv"}, None)]
    for arch, threads, compiled, epochs, extra in settings:
        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)
        label = f"{', compiled' if compiled else ''}{f', {extra}' if extra else ''}"
        print(f" {arch}{label}, {threads} thread(s), {epochs} epoch(s):", flush=True)
        ours_images, study_images = IMAGES[arch]
        if args.images:
            ours_images = args.images
        count = min(images, ours_images)
        row = compare(
            arch, photos[:count], min(study_images, count), repeat, compiled, epochs, extra
        )
        report["speed"].append({"threads": threads, **row})
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    if args.processes > 1:
        # The same cores shared by several processes (torchrun), each with its own GIL.
        count = min(images, args.images or IMAGES["study"][0])
        study_images = min(IMAGES["study"][1], count)
        for compiled in (False, True):
            print(
                f" study{', compiled' if compiled else ''}, {args.processes} processes:",
                flush=True,
            )
            report["speed"].append(
                compare_processes(photos[:count], args.processes, study_images, repeat, compiled)
            )
    print("one step of 128 photos:")
    report["breakdown"] = breakdown(photos[: max(BATCH, min(len(photos), 2048))])
    for row in report["breakdown"]:
        print(f"  {row['part']:52s} {row['ms']:8.2f} ms")
    print(f"memory: {memory_images:,} synthetic photos ...", flush=True)
    report["memory"] = memory_test(photos, memory_images, budget=60.0 if args.small else 600.0)
    report["load_after"] = [round(v, 2) for v in os.getloadavg()]
    memory = report["memory"]
    print(f"  peak RSS {memory['peak_rss_mb']} MB over {memory['seconds']} s ({memory['stopped']})")
    for row in report["speed"]:
        target = f" (target {TARGET_RATIO:g}x)" if row["arch"] == "study" else ""
        print(f"{row['arch']}, {_setting(row)}: {row['ratio']}x the study's loop{target}")
    write_results(report, args.out)


if __name__ == "__main__":
    main()
