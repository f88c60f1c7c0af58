"""Several processes, several machines: the process group that ``torchrun`` describes.

``torchrun --nproc_per_node=N -m img2img train ...`` sets ``WORLD_SIZE``,
``RANK`` and ``LOCAL_RANK``; :func:`setup_distributed` joins the group (gloo on
the CPU, NCCL on CUDA) so that :func:`img2img.train_model` wraps the model in
``DistributedDataParallel``, gives each rank its shard of every batch,
all-reduces losses and lets rank 0 alone write. Across machines::

    torchrun --nnodes=2 --nproc_per_node=4 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 -m img2img train ...
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from img2img.devices import resolve_device

__all__ = ["setup_distributed"]


def setup_distributed(device: str | torch.device = "auto") -> tuple[int, int, torch.device]:
    """Join the process group described by the environment, if any.

    Args:
        device: The device asked for; under ``torchrun`` with CUDA, each process
            takes ``cuda:LOCAL_RANK``.

    Returns:
        ``(rank, world_size, device)``; ``(0, 1, device)`` outside ``torchrun``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    resolved = resolve_device(device)
    if world <= 1:
        return 0, 1, resolved
    if resolved.type == "cuda":
        resolved = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(resolved)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), resolved
