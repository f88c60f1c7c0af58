"""How one optimisation step runs: the :class:`Engine` interface and its plain PyTorch form.

The training loop (:mod:`img2img_filters.train.loop`) owns the recipe (loss, Adam, schedule,
early stopping); an engine owns only how a batch becomes a loss and an update:

* ``engine.step(inputs, targets, scale)``: forward pass, loss, backward pass,
  optimiser step; returns the batch's mean loss (a 0-d tensor, not yet read back).
* ``engine.evaluate(inputs, targets)``: the mean loss without gradients.
* ``engine.state_dict()`` / ``engine.load_state_dict()``: the model's and the
  optimiser's state, for checkpoints.
* ``engine.threads()``: the thread setting to train under (a context manager).
* ``engine.inline_batches``: whether batches must be made inline (no batch thread).

:class:`Engine` itself runs the model as written (optionally inside
``DistributedDataParallel``); subclasses change the network the batch goes through
(:class:`img2img_filters.train.engines.CompiledEngine`), the convolutions
(:class:`img2img_filters.backends.cpu.OpenCVEngine`) or the whole forward pass and loss
(:class:`img2img_filters.backends.cpu.FusedEngine`).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["Engine", "average_gradients", "broadcast_parameters", "process_group"]


def process_group() -> tuple[int, int]:
    """``(rank, world_size)`` of the process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def broadcast_parameters(model: nn.Module) -> None:
    """Give every process rank 0's parameters and buffers (as ``DistributedDataParallel`` does)."""
    _, world = process_group()
    if world == 1:
        return
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor, src=0)


def average_gradients(model: nn.Module) -> None:
    """Average the gradients over the processes (what ``DistributedDataParallel`` does).

    For models trained without it (the fused loops): one all-reduce of all
    gradients, flattened; a missing gradient counts as zeros. Every process ends
    with the same sums, so the weights stay identical.
    """
    _, world = process_group()
    if world == 1:
        return
    parameters = [p for p in model.parameters() if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([grad.reshape(-1) for grad in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for parameter in parameters:
        size = parameter.numel()
        parameter.grad = flat[offset : offset + size].view_as(parameter).clone()
        offset += size


class Engine:
    """One optimisation step in plain PyTorch (the model as written, in eager mode).

    Args:
        model: The network, already on ``device``; trained in place.
        optimizer: Over the model's parameters.
        loss_fn: ``loss_fn(outputs, targets) -> mean loss``.
        device: The training device.
        distributed: Wrap the model in ``DistributedDataParallel`` (under ``torchrun``).
        amp: Mixed precision (bfloat16 autocast; CUDA only).
        channels_last: Feed the inputs in the NHWC memory format.

    Attributes:
        name: The engine's name (``"eager"``, ``"ddp"``, ``"compile"``, ``"opencv"``, ``"fused"``).
        reason: Why it was chosen (set by whoever chose it).
        network: What a training batch goes through.
        evaluator: What a validation batch goes through (never wrapped for gradient exchange).
    """

    name = "eager"

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        device: torch.device,
        *,
        distributed: bool = False,
        amp: bool = False,
        channels_last: bool = False,
    ) -> None:
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.device, self.distributed, self.channels_last = device, distributed, channels_last
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)
        self.network: nn.Module = model
        if distributed:
            ids = [device.index] if device.type == "cuda" else None
            self.network = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        self.evaluator: nn.Module = model if distributed else self.network
        self.reason = ""

    # -- what subclasses change ------------------------------------------------------------------

    def mode(self) -> AbstractContextManager:
        """The context every forward pass runs in (here: none)."""
        return nullcontext()

    def threads(self) -> AbstractContextManager:
        """The thread setting the whole training runs under (here: unchanged)."""
        return nullcontext()

    @property
    def inline_batches(self) -> bool:
        """Whether batches must be made inline, without a background thread."""
        return False

    def loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training batch's mean loss, differentiable in the parameters.

        Args:
            inputs: ``(B, C_in, H, W)``.
            targets: ``(B, C_out, H, W)``.
        """
        with self.mode(), self.autocast:
            outputs = self.network(inputs)
        return self.loss_fn(outputs.float(), targets)

    def after_backward(self) -> None:
        """Called between the backward pass and the optimiser step (here: nothing)."""

    # -- the interface ---------------------------------------------------------------------------

    def step(self, inputs: torch.Tensor, targets: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """One optimisation step on a batch; returns its mean loss (0-d, on the device).

        Args:
            inputs: ``(B, C_in, H, W)``.
            targets: ``(B, C_out, H, W)``.
            scale: Factor on the loss for the gradient (a process's share of a global batch).
        """
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        loss = self.loss(inputs, targets)
        self.optimizer.zero_grad(set_to_none=True)
        (loss if scale == 1.0 else loss * scale).backward()
        self.after_backward()
        self.optimizer.step()
        return loss.detach()

    def evaluate(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The batch's mean loss without gradients (0-d, float32)."""
        with torch.no_grad(), self.mode():
            outputs = self.evaluator(inputs).float()
        return self.loss_fn(outputs, targets)

    def train(self) -> None:
        """Put the network in training mode."""
        self.network.train()

    def eval(self) -> None:
        """Put the network in evaluation mode."""
        self.evaluator.eval()

    def state_dict(self) -> dict[str, Any]:
        """``{"model": weights (CPU copies), "optimizer": its state}``."""
        return {
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` gave."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
