"""Soak speed: the soak test's 1,000 varied ``apply_filter`` calls, timed against plain PyTorch.

The workload (shared with ``tests/test_soak.py``, which checks memory, not time) is four
models (a ``linear`` model that ``apply_filter`` folds into one OpenCV filter, the
``study`` network, a small ``can`` and ``structured``) and twelve images of random size
(1x1 to 128x128), dtype (uint8, uint16, float32) and layout (gray, RGB, RGBA, one
channel), every fourth a PNG file. A warm-up calls each of the 48 (image, model, tiled)
combinations once; the plan then draws ``--calls`` of them at random.

Two ways run the same plan in one process, chunk by chunk in turn (the order swapped
each round), so that the load of a shared machine falls on both alike:

(a) img2img: ``apply_filter(image, model, tile=..., device="cpu")``;
(b) the plain way, what a user writes with PyTorch alone: read a file with OpenCV,
    scale to float32 in [0, 1], make three channels, one ``model(x)`` under
    ``torch.inference_mode`` on the whole image, back to NumPy.

The ratio is (b)'s time over (a)'s: above 1, img2img is faster.

Usage::

    python benchmarks/soak.py            # 1,000 calls, 5 rounds
    python benchmarks/soak.py --small    # CI: 200 calls, 2 rounds

Writes ``benchmarks/results/soak.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning (see the other benchmarks).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import cv2
import numpy as np
import torch

from img2img_filters.imageio import write_image
from img2img_filters.infer import apply_filter
from img2img_filters.models import create_img2img_model, receptive_field

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CALLS = 1000
IMAGES = 12
Image = np.ndarray | Path
Step = tuple[int, int, bool]  # (image index, model index, tiled)


def models() -> list[torch.nn.Module]:
    """The four models of the soak, their weights perturbed from the defaults (seeded)."""
    torch.manual_seed(0)
    made = [
        create_img2img_model(3, 1, "linear", kernel_size=5),  # folded: one OpenCV filter
        create_img2img_model(3, 1, "study"),
        create_img2img_model(3, 3, "can", width=8, depth=3),
        create_img2img_model(3, 1, "structured"),
    ]
    with torch.no_grad():
        for model in made:
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.05)
    return [model.eval() for model in made]


def inputs(folder: Path, rng: np.random.Generator) -> list[Image]:
    """12 images of random size (1 to 128 a side), dtype and layout; every fourth is a file."""
    made: list[Image] = []
    for index in range(IMAGES):
        height, width = (int(v) for v in rng.integers(1, 129, size=2))
        if index == 0:
            height, width = 1, 1
        layout = index % 4
        shape = [(height, width), (height, width, 3), (height, width, 4), (height, width, 1)][
            layout
        ]
        kind = index % 3
        if kind == 0:
            image = rng.integers(0, 256, shape, dtype=np.uint8)
        elif kind == 1:
            image = rng.integers(0, 65536, shape, dtype=np.uint16)
        else:
            image = rng.random(shape, dtype=np.float32)
        if index % 4 == 3:
            path = folder / f"{index}.png"
            write_image(path, image, bit_depth=16 if kind == 1 else 8)
            made.append(path)
        else:
            made.append(image)
    return made


def plan(n_images: int, n_models: int, calls: int, rng: np.random.Generator) -> list[Step]:
    """Every (image, model, tiled) combination once (the warm-up), then ``calls`` drawn at random."""
    combinations = [
        (image, model, bool((image + model) % 2))
        for image in range(n_images)
        for model in range(n_models)
    ]
    return combinations + [
        combinations[int(i)] for i in rng.integers(len(combinations), size=calls)
    ]


def ours(image: Image, model: torch.nn.Module, tiled: bool) -> np.ndarray:
    """(a) One ``apply_filter`` call, tiled or not."""
    tile = receptive_field(model) + 9 if tiled else None
    return apply_filter(image, model, tile=tile, device="cpu")


def plain(image: Image, model: torch.nn.Module, tiled: bool) -> np.ndarray:
    """(b) The same filter with PyTorch alone: one forward pass on the whole image."""
    if isinstance(image, Path):
        image = cv2.imread(str(image), cv2.IMREAD_UNCHANGED)
        if image.ndim == 3:
            image = cv2.cvtColor(
                image, cv2.COLOR_BGRA2RGBA if image.shape[2] == 4 else cv2.COLOR_BGR2RGB
            )
    array = image if image.ndim == 3 else image[..., None]
    scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(array.dtype, 1.0)
    x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32) / np.float32(scale))
    x = x.permute(2, 0, 1)[None]
    x = x[:, :3] if x.shape[1] == 4 else x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
    with torch.inference_mode():
        y = model(x)
    return y[0].permute(1, 2, 0).squeeze(-1).numpy()


def run(calls: int, rounds: int, threads: int) -> dict:
    """Time both ways over the same plan; the figures as a dict."""
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    rng = np.random.default_rng(7)
    made = models()
    with tempfile.TemporaryDirectory() as folder:
        images = inputs(Path(folder), rng)
        steps = plan(len(images), len(made), calls, rng)
        warm_up, timed = steps[: len(images) * len(made)], steps[len(images) * len(made) :]
        ways = {"img2img": ours, "plain": plain}
        for way in ways.values():
            for image, model, tiled in warm_up:
                way(images[image], made[model], tiled)
        seconds = dict.fromkeys(ways, 0.0)
        chunks = np.array_split(np.arange(len(timed)), rounds)
        for index, chunk in enumerate(chunks):
            order = list(ways) if index % 2 == 0 else list(reversed(ways))
            for name in order:
                started = time.perf_counter()
                for step in chunk:
                    image, model, tiled = timed[int(step)]
                    ways[name](images[image], made[model], tiled)
                seconds[name] += time.perf_counter() - started
    return {
        "calls": calls,
        "rounds": rounds,
        "threads": threads,
        "img2img_s": round(seconds["img2img"], 6),
        "plain_s": round(seconds["plain"], 6),
        "img2img_ms_per_call": round(1000 * seconds["img2img"] / calls, 3),
        "plain_ms_per_call": round(1000 * seconds["plain"] / calls, 3),
        "ratio": round(seconds["plain"] / seconds["img2img"], 3),
        "machine": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "opencv": cv2.__version__,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
    }


def to_markdown(result: dict) -> str:
    """The result as a Markdown table with its reading."""
    rows = [
        ("(a) img2img `apply_filter`", result["img2img_s"], result["img2img_ms_per_call"]),
        ("(b) plain PyTorch forward", result["plain_s"], result["plain_ms_per_call"]),
    ]
    lines = [
        f"# Soak speed: {result['calls']} varied calls",
        "",
        "| way | total (s) | per call (ms) |",
        "|---|---:|---:|",
        *(f"| {way} | {total:.3f} | {per_call:.3f} |" for way, total, per_call in rows),
        "",
        f"Ratio (b) / (a): **{result['ratio']}** (above 1: img2img is faster). "
        f"{result['rounds']} rounds, the two ways in turn, {result['threads']} threads; "
        f"{result['machine']['cpus']} CPUs, torch {result['machine']['torch']}. The images are "
        "small (1x1 to 128x128), so each call's fixed cost (checks, conversions, tiling set-up) "
        "weighs more than the filtering itself.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark and write its Markdown and JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=CALLS, help="timed calls (default 1000)")
    parser.add_argument("--rounds", type=int, default=5, help="chunks the two ways alternate over")
    parser.add_argument("--threads", type=int, default=2, help="threads for PyTorch and OpenCV")
    parser.add_argument("--small", action="store_true", help="200 calls, 2 rounds (for CI)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the .md and .json")
    args = parser.parse_args(argv)
    calls, rounds = (
        (min(args.calls, 200), min(args.rounds, 2)) if args.small else (args.calls, args.rounds)
    )
    if calls < 1 or rounds < 1 or rounds > calls:
        parser.error(
            f"--calls and --rounds: expected 1 <= rounds <= calls, got {args.calls}, {args.rounds}"
        )
    result = run(calls, rounds, args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "soak.md").write_text(to_markdown(result))
    print(to_markdown(result))
    return result


if __name__ == "__main__":
    main()
