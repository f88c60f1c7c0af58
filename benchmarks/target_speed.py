"""Speed of batched target generation against OpenCV image by image.

Times ``create_filter(spec)(batch)`` on one batch of real photos (128 x 3 x 64 x 64
from the mini Tiny ImageNet; scikit-image's sample photos when it is absent)
against the loop a script would write with OpenCV: for each of the 128 images,
``cv2.cvtColor`` and the OpenCV calls the filter names. Each side starts from the
photos in its own layout, prepared before timing: a float32 tensor
``(B, 3, H, W)`` for img2img, float32 ``(H, W, 3)`` images (uint8 for median and
Canny, which OpenCV runs on 8-bit photos) for OpenCV. The outputs are compared
too, so a fast wrong answer shows.

Usage::

    python benchmarks/target_speed.py               # 128 photos, 20 repeats
    python benchmarks/target_speed.py --small       # CI: 16 photos, 3 repeats
    python benchmarks/target_speed.py --device cuda

Writes ``benchmarks/results/target_speed.md`` and ``.json``. Timings are the
median of ``--repeat`` runs after a warm-up, with ``time.perf_counter``; torch
and OpenCV get the same number of threads (``--threads``, default 2), and
``OMP_WAIT_POLICY`` defaults to ``PASSIVE`` (see below).
"""

from __future__ import annotations

import os

# OpenMP threads that spin while they wait slow PyTorch down by 10-50x on a machine whose
# cores other processes share; they sleep instead unless the caller says otherwise.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from img2img_filters.filters import create_filter
from img2img_filters.filters.linear import random_kernel

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MINI_ROOT = Path(
    os.environ.get("IMG2IMG_MINI_ROOT", ROOT.parent / "shared" / "data" / "tiny-imagenet-200-mini")
)

Baseline = Callable[[list[np.ndarray], list[np.ndarray]], list[np.ndarray]]


def load_photos(count: int, size: int = 64) -> tuple[np.ndarray, str]:
    """``count`` real photos as uint8 ``(count, size, size, 3)`` RGB, and where they came from."""
    paths = sorted((MINI_ROOT / "val" / "images").glob("*.JPEG"))
    if len(paths) >= count:
        photos = [
            cv2.cvtColor(cv2.imread(str(p), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for p in paths
        ]
        photos = [cv2.resize(p, (size, size), interpolation=cv2.INTER_AREA) for p in photos[:count]]
        return np.stack(photos), f"mini Tiny ImageNet ({MINI_ROOT.name}, val)"
    from skimage import data

    sources = [
        data.astronaut(),
        data.chelsea(),
        data.coffee(),
        data.rocket(),
        data.immunohistochemistry(),
    ]
    rng = np.random.default_rng(0)
    crops = []
    for i in range(count):
        image = sources[i % len(sources)]
        y = int(rng.integers(0, image.shape[0] - size))
        x = int(rng.integers(0, image.shape[1] - size))
        crops.append(image[y : y + size, x : x + size])
    return np.stack(crops), "scikit-image sample photos (random 64x64 crops)"


def _gray(images: list[np.ndarray]) -> list[np.ndarray]:
    return [cv2.cvtColor(im, cv2.COLOR_RGB2GRAY) for im in images]


def _study_sobel(f32: list[np.ndarray], u8: list[np.ndarray]) -> list[np.ndarray]:
    return [
        cv2.Sobel(cv2.GaussianBlur(g, (3, 3), 0), cv2.CV_32F, 1, 1, ksize=3) for g in _gray(f32)
    ]


_STUDY_KERNEL = random_kernel(3, 0, "uniform").astype(np.float32)


def _study_random(f32: list[np.ndarray], u8: list[np.ndarray]) -> list[np.ndarray]:
    return [cv2.filter2D(g, cv2.CV_32F, _STUDY_KERNEL) for g in _gray(f32)]


def _sobel5(f32: list[np.ndarray], u8: list[np.ndarray]) -> list[np.ndarray]:
    return [cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=5) for g in _gray(f32)]


def _gaussian5(f32: list[np.ndarray], u8: list[np.ndarray]) -> list[np.ndarray]:
    return [cv2.GaussianBlur(g, (5, 5), 0) for g in _gray(f32)]


def _magnitude(f32: list[np.ndarray], u8: list[np.ndarray]) -> list[np.ndarray]:
    out = []
    for g in _gray(f32):
        out.append(cv2.magnitude(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1)))
    return out


def _median(f32: list[np.ndarray], u8: list[np.ndarray]) -> list[np.ndarray]:
    return [cv2.medianBlur(g, 3).astype(np.float32) / 255.0 for g in _gray(u8)]


_ELEMENT = np.ones((3, 3), np.uint8)


def _dilate(f32: list[np.ndarray], u8: list[np.ndarray]) -> list[np.ndarray]:
    return [cv2.dilate(g, _ELEMENT, borderType=cv2.BORDER_REFLECT_101) for g in _gray(f32)]


def _canny(f32: list[np.ndarray], u8: list[np.ndarray]) -> list[np.ndarray]:
    return [cv2.Canny(g, 100, 200).astype(np.float32) / 255.0 for g in _gray(u8)]


#: (spec, the OpenCV loop it is compared with, whether outputs must match exactly).
CASES: list[tuple[str, Baseline, bool]] = [
    ("study-sobel", _study_sobel, False),
    ("study-random", _study_random, False),
    ("sobel:ksize=5", _sobel5, False),
    ("gaussian:ksize=5", _gaussian5, False),
    ("magnitude", _magnitude, False),
    ("median", _median, True),
    ("dilate", _dilate, False),
    ("canny", _canny, True),
]


def median_ms(function: Callable[[], object], repeat: int, sync: Callable[[], None]) -> float:
    """The median wall time of ``function`` over ``repeat`` runs, after two warm-up runs, in ms."""
    for _ in range(2):
        function()
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        sync()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def run(batch_size: int, repeat: int, device: str, threads: int) -> dict:
    """Time every case; return the results as a JSON-ready dict."""
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    photos, source = load_photos(batch_size)
    u8 = [np.ascontiguousarray(p) for p in photos]
    f32 = [p.astype(np.float32) / 255.0 for p in photos]
    batch = (torch.from_numpy(photos).permute(0, 3, 1, 2).float() / 255.0).contiguous().to(device)
    sync = torch.cuda.synchronize if batch.device.type == "cuda" else (lambda: None)

    rows = []
    for spec, baseline, exact in CASES:
        f = create_filter(spec)
        ours_ms = median_ms(lambda f=f: f(batch), repeat, sync)
        opencv_ms = median_ms(lambda b=baseline: b(f32, u8), repeat, lambda: None)
        ours = f(batch).permute(0, 2, 3, 1).squeeze(-1).cpu().numpy()
        expected = np.stack(baseline(f32, u8))
        diff = float(np.abs(ours.astype(np.float64) - expected).max())
        # the test suite's rule: exact, or 1e-5 relative to the largest output beyond 1
        agrees = diff == 0 if exact else diff <= 1e-5 * max(1.0, float(np.abs(expected).max()))
        rows.append(
            {
                "filter": spec,
                "backend": f.backend,
                "ours_ms": round(ours_ms, 3),
                "opencv_ms": round(opencv_ms, 3),
                "ratio": round(opencv_ms / ours_ms, 3),
                "max_abs_diff": diff,
                "exact": exact,
                "agrees": bool(agrees),
            }
        )
        print(
            f"{spec:18s} ours {ours_ms:8.2f} ms  opencv {opencv_ms:8.2f} ms  "
            f"ratio {opencv_ms / ours_ms:6.2f}  max|diff| {diff:.2g}{'' if agrees else '  DISAGREES'}",
            flush=True,
        )
    return {
        "benchmark": "target_speed",
        "batch": [batch_size, 3, 64, 64],
        "photos": source,
        "repeat": repeat,
        "device": str(batch.device),
        "threads": threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "torch": torch.__version__,
        "opencv": cv2.__version__,
        "machine": f"{platform.machine()} {platform.processor() or platform.system()}",
        "rows": rows,
    }


def to_markdown(result: dict) -> str:
    """The results as a Markdown table with a short header."""
    b = result["batch"]
    lines = [
        "# Target generation speed",
        "",
        f"One batch of {b[0]}x{b[1]}x{b[2]}x{b[3]} photos from {result['photos']}; "
        f"img2img on {result['device']} against OpenCV image by image (cvtColor + the calls "
        f"the filter names). Median of {result['repeat']} runs after warm-up; "
        f"{result['threads']} threads each; torch {result['torch']}, OpenCV {result['opencv']}. "
        "Ratio = OpenCV time / img2img time (above 1: img2img is faster).",
        "",
        "| filter | backend | img2img ms/batch | OpenCV ms/batch | ratio | max abs diff | agrees |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| `{row['filter']}` | {row['backend']} | {row['ours_ms']:.2f} | "
            f"{row['opencv_ms']:.2f} | {row['ratio']:.2f} | {row['max_abs_diff']:.2g} | "
            f"{'yes' if row['agrees'] else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=20, help="timed runs per measurement")
    parser.add_argument("--small", action="store_true", help="16 photos and 3 repeats (for CI)")
    parser.add_argument("--batch", type=int, default=128, help="photos per batch")
    parser.add_argument("--device", default="cpu", help="torch device for img2img (cpu, cuda, ...)")
    parser.add_argument("--threads", type=int, default=2, help="torch and OpenCV threads")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the .md and .json")
    args = parser.parse_args(argv)
    batch, repeat = (16, min(args.repeat, 3)) if args.small else (args.batch, args.repeat)
    if batch < 1 or repeat < 1:
        parser.error(f"--batch and --repeat must be at least 1; got {batch} and {repeat}")
    result = run(batch, repeat, args.device, args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "target_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "target_speed.md").write_text(to_markdown(result))
    print(to_markdown(result))
    return result


if __name__ == "__main__":
    main()
