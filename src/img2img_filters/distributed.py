r"""Several processes, several machines: the process group that ``torchrun`` describes.

``torchrun`` starts the processes and sets ``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`setup_distributed`
joins the group (gloo on the CPU, NCCL on CUDA, each process on GPU
``LOCAL_RANK``). :func:`img2img_filters.train_model` then wraps the model in
``DistributedDataParallel``: every batch of ``--batch-size`` images is dealt
round-robin to the processes, gradients are averaged so that a step equals a
one-process step on the whole batch, losses are all-reduced, and rank 0 alone
writes the run folder (checkpoint, ``state.pt``, ``config.json``, metrics,
figures) and computes the final metrics; the other ranks write nothing.

One machine, four processes (CPU cores or GPUs)::

    torchrun --nproc_per_node=4 -m img2img_filters train --data tiny-imagenet --arch can --out runs/can

Two machines with four GPUs each: run the same command on both, naming one of
them (``HOST``, reachable from the other on port 29500) as the rendezvous point::

    torchrun --nnodes=2 --nproc_per_node=4 --rdzv_backend=c10d \\
        --rdzv_endpoint=HOST:29500 --rdzv_id=img2img-run \\
        -m img2img_filters train --data tiny-imagenet --arch can --out runs/can

Every machine needs the data at the same path (or the same ``--data``
download) and the decode cache builds on each. Only rank 0 (on the first
machine) writes ``--out``; to ``--resume`` a multi-machine run, the run folder
must be readable by every machine (a shared file system), since every process
loads ``state.pt``. The global batch is ``--batch-size`` however many processes
share it, so a run is reproduced, up to float rounding, by any number of them.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from img2img_filters.devices import resolve_device

__all__ = ["cleanup_distributed", "setup_distributed"]


def setup_distributed(device: str | torch.device = "auto") -> tuple[int, int, torch.device]:
    """Join the process group described by the environment, if any.

    Args:
        device: The device asked for; under ``torchrun`` with CUDA, each process
            takes ``cuda:LOCAL_RANK``.

    Returns:
        ``(rank, world_size, device)``; ``(0, 1, device)`` outside ``torchrun``.

    Raises:
        ValueError: If ``WORLD_SIZE``, ``RANK`` or ``LOCAL_RANK`` is not an integer.
    """
    world = _env_int("WORLD_SIZE", 1)
    resolved = resolve_device(device)
    if world <= 1:
        return 0, 1, resolved
    if resolved.type == "cuda":
        resolved = torch.device("cuda", _env_int("LOCAL_RANK", 0))
        torch.cuda.set_device(resolved)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), resolved


def cleanup_distributed() -> None:
    """Leave the process group, if this process joined one (a no-op otherwise)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer; got {value!r}") from None
