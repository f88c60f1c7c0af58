"""How each training step runs, chosen once per run: :func:`choose_engine`.

Every engine has the interface of :class:`~img2img_filters.backends.engine.Engine`
(``step``, ``evaluate``, ``state_dict``, ``load_state_dict``):

* :class:`EagerEngine`: the model as written (any device).
* :class:`DDPEngine`: the same inside ``DistributedDataParallel`` (under ``torchrun``).
* :class:`CompiledEngine`: the model through ``torch.compile``.
* :class:`~img2img_filters.backends.cpu.OpenCVEngine`: few-channel convolutions through OpenCV (CPU).
* :class:`~img2img_filters.backends.cpu.FusedEngine`: a chain of them as fused compiled loops (CPU).

With ``engine="auto"`` (the default) the fastest that works is taken: the fused
loops when the network is a fusable chain (:func:`~img2img_filters.backends.cpu.fusable_chain`),
the device is the CPU, a C++ compiler works (:func:`compiler_works`) and the run is
long enough to repay compiling (:func:`repays_compiling`), on one thread when the
machine's cores are busy (:func:`busy_cores`); else the OpenCV path when
the network has few-channel convolutions on the CPU; else eager (DDP under
``torchrun``). ``compile=True`` asks for the fused loops where the network qualifies
and ``torch.compile`` otherwise, as it always did.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from img2img_filters.backends.cpu import SUM_LOSSES, FusedEngine, OpenCVEngine, fusable_chain
from img2img_filters.backends.cpu.limits import has_tiny_convs
from img2img_filters.backends.engine import Engine
from img2img_filters.train.config import ENGINES, TrainConfig

__all__ = [
    "ENGINES",
    "CompiledEngine",
    "DDPEngine",
    "EagerEngine",
    "FusedEngine",
    "OpenCVEngine",
    "busy_cores",
    "choose_engine",
    "compiler_works",
    "repays_compiling",
]

#: Seconds a step of the fused loops saves over the OpenCV path, per pixel of the batch:
#: 17.35 ms against 5.73 ms for 128 photos of 64x64 (two idle cores, benchmarks/train_speed.py).
SAVED_SECONDS_PER_PIXEL = 2.2e-8
#: Seconds that compiling the fused loops costs when Inductor's on-disk cache has them
#: (3.1 s measured on two idle cores, 4.7 s on busy ones); the first time on a machine,
#: about 25 s. (Compiling again in the same process: 0.07-0.3 s.)
COMPILE_SECONDS = 5.0


class EagerEngine(Engine):
    """The model as written, in one process (any device)."""

    name = "eager"


class DDPEngine(Engine):
    """The model inside ``DistributedDataParallel``: each process trains on its share."""

    name = "ddp"


class CompiledEngine(Engine):
    """The model (inside ``DistributedDataParallel`` under ``torchrun``) through ``torch.compile``.

    Evaluation goes through the compiled model too, except under ``torchrun`` (the
    plain model: evaluation exchanges no gradients).
    """

    name = "compile"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.network = torch.compile(self.network)
        self.evaluator = self.model if self.distributed else self.network


@functools.cache
def compiler_works() -> bool:
    """Whether the C++ compiler ``torch.compile`` uses on the CPU compiles a trivial program.

    Checked once per process (a fraction of a second): Inductor's compiler name is
    looked up on the ``PATH``, then asked to compile ``int main() {}``.
    """
    try:
        from torch._inductor import cpp_builder  # private: the compiler Inductor would use

        compiler = cpp_builder.get_cpp_compiler()
    except Exception:
        return False
    if not compiler or shutil.which(compiler) is None:
        return False
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "probe.cpp"
        source.write_text("int main() { return 0; }\n")
        try:
            done = subprocess.run(
                [compiler, str(source), "-o", str(Path(folder) / "probe")],
                capture_output=True,
                timeout=60,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return False
    return done.returncode == 0


def busy_cores() -> bool:
    """Whether the machine's load (1-minute average) exceeds the cores this process may use.

    Then the fused loops train on one thread: measured at a load of 10 on 2 cores, a step
    took 21-36 ms on one thread, 200-300 ms on two, 45-51 ms through OpenCV.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average on this platform
        return False
    return load > cores


def repays_compiling(planned_steps: int, pixels_per_step: int) -> bool:
    """Whether a run of ``planned_steps`` steps of ``pixels_per_step`` pixels repays compiling.

    The fused loops save about :data:`SAVED_SECONDS_PER_PIXEL` per pixel of a step
    over the OpenCV path; compiling them costs about :data:`COMPILE_SECONDS`.

    >>> repays_compiling(100 * 32, 128 * 64 * 64)  # 100 epochs of 4096 photos, 64x64
    True
    >>> repays_compiling(3 * 3, 4 * 64 * 64)  # a short test run
    False
    """
    return planned_steps * pixels_per_step * SAVED_SECONDS_PER_PIXEL >= COMPILE_SECONDS


def _requested(config: TrainConfig) -> str:
    """The engine asked for: ``config.engine``, or what ``compile=True`` means."""
    if config.compile and config.engine not in ("auto", "fused", "compile"):
        raise ValueError(
            f"compile=True asks for a compiled engine; engine={config.engine!r} contradicts it"
        )
    return "compiled" if config.engine == "auto" and config.compile else config.engine


# Over 80 lines only for its docstring.
def choose_engine(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    config: TrainConfig,
    device: torch.device,
    world: int,
    planned_steps: int,
    pixels_per_step: int,
) -> Engine:
    """The engine that runs every step of this run, with ``engine.reason`` saying why.

    Args:
        model: The network, on ``device`` (resumed weights already loaded).
        optimizer: Over its parameters.
        loss_fn: The training loss.
        config: The run's settings (``engine``, ``compile``, ``loss``, ``amp``, ``channels_last``).
        device: The training device.
        world: Processes training together (``torchrun``), 1 without.
        planned_steps: Optimisation steps the run plans (epochs times batches).
        pixels_per_step: Pixels of one batch (photos times height times width).

    Raises:
        ValueError: For a forced engine this run cannot use (the message says why).
    """
    requested = _requested(config)
    on_cpu = device.type == "cpu"
    chain = fusable_chain(model) if on_cpu and config.loss in SUM_LOSSES else None
    common = {"device": device, "channels_last": config.channels_last}
    amp = bool(config.amp) and device.type == "cuda"
    eager = {**common, "distributed": world > 1, "amp": amp}
    dp = " in DistributedDataParallel" if world > 1 else ""

    def fused(reason: str, threads: int | None = None) -> Engine:
        engine = FusedEngine(
            model,
            optimizer,
            loss_fn,
            chain=chain,
            loss=config.loss,
            distributed=world > 1,
            threads=threads,
            **common,
        )
        engine.reason = reason
        return engine

    def plain(kind: type[Engine], reason: str) -> Engine:
        if kind is EagerEngine and world > 1:
            kind = DDPEngine
        engine = kind(model, optimizer, loss_fn, **eager)
        engine.reason = reason
        return engine

    if requested == "compiled":  # compile=True: as it always did, a failed compile warns
        if chain is not None:
            return fused("compile=True: the network is a chain of few-channel convolutions")
        return plain(CompiledEngine, f"compile=True: torch.compile{dp}")
    if requested == "compile":
        return plain(CompiledEngine, f"forced: torch.compile{dp}")
    if requested == "fused":
        why = _fused_impossible(on_cpu, chain, config.loss)
        if why:
            raise ValueError(f"engine='fused' cannot train this run: {why}")
        return fused("forced")
    if requested == "opencv":
        if not on_cpu:
            raise ValueError(f"engine='opencv' runs on the CPU only; the device is {device}")
        return plain(OpenCVEngine, f"forced{dp}")
    if requested == "ddp" and world == 1:
        raise ValueError("engine='ddp' needs several processes (start them with torchrun)")
    if requested in ("eager", "ddp"):
        return plain(EagerEngine, f"forced{dp}")
    # auto: the fused loops when they qualify and repay compiling, else OpenCV, else eager
    if chain is not None and not compiler_works():
        why_not = "no working C++ compiler for the fused loops"
    elif chain is not None and not repays_compiling(planned_steps, pixels_per_step):
        why_not = f"{planned_steps} planned steps do not repay compiling the fused loops"
    elif chain is not None:
        reason = f"auto: a chain of few-channel convolutions, {planned_steps} planned steps"
        if busy_cores():  # OpenMP threads that wait on shared cores collapse: one thread
            return fused(f"{reason}; one thread (the cores are busy)", threads=1)
        return fused(reason)
    else:
        why_not = "not a chain the fused loops take"
    if on_cpu and has_tiny_convs(model):
        return plain(OpenCVEngine, f"auto: few-channel convolutions on the CPU ({why_not}){dp}")
    return plain(EagerEngine, f"auto: no few-channel convolutions on the {device.type}{dp}")


def _fused_impossible(on_cpu: bool, chain: list[nn.Module] | None, loss: str) -> str:
    """Why the fused engine cannot run ('' when it can)."""
    if not on_cpu:
        return "it runs on the CPU only"
    if loss not in SUM_LOSSES:
        return f"loss {loss!r} is not one of {sorted(SUM_LOSSES)}"
    if chain is None:
        return "the network is not a plain chain of few-channel zero-padded convolutions"
    if not compiler_works():
        return "no working C++ compiler (torch.compile needs one on the CPU)"
    return ""
