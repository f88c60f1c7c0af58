"""The CPU-only training engines: OpenCV convolutions, and fused loops compiled from the network.

* :class:`OpenCVEngine` runs the model as written, its few-channel convolutions
  through OpenCV (:mod:`img2img_filters.backends.cpu.opencv_conv`), with one PyTorch thread
  when those are all its convolutions (see :func:`~img2img_filters.backends.cpu.limits.torch_threads`).
  Under ``torchrun`` the model is wrapped in ``DistributedDataParallel`` as usual.
* :class:`FusedEngine` trains a plain chain of such convolutions (the study's
  network) as fused loops that ``torch.compile`` makes from it
  (:mod:`img2img_filters.backends.cpu.fused`), with all threads and batches made inline;
  under ``torchrun`` gradients are averaged after each backward pass. Evaluation,
  and training should compiling fail, go through the OpenCV path.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn

from img2img_filters.backends.cpu.fused import FusedTrainer
from img2img_filters.backends.cpu.limits import only_tiny_convs, torch_threads
from img2img_filters.backends.cpu.opencv_conv import tiny_conv_mode
from img2img_filters.backends.engine import Engine, average_gradients, broadcast_parameters

__all__ = ["FusedEngine", "OpenCVEngine"]


class OpenCVEngine(Engine):
    """The model as written, its few-channel convolutions run by OpenCV (CPU only).

    Same arguments as :class:`~img2img_filters.backends.engine.Engine`.
    """

    name = "opencv"

    def mode(self) -> AbstractContextManager:
        """Eligible ``conv2d`` calls go to OpenCV."""
        return tiny_conv_mode()

    def threads(self) -> AbstractContextManager:
        """One PyTorch thread for a network of tiny convolutions only; else unchanged."""
        return torch_threads(1) if only_tiny_convs(self.model) else nullcontext()


class FusedEngine(OpenCVEngine):
    """A chain of few-channel convolutions trained as fused compiled loops (CPU only).

    Args:
        model: The network; trained in place.
        optimizer: Over its parameters.
        loss_fn: The eager loss (for evaluation and the fallback).
        device: The CPU.
        chain: The model's layers, from :func:`~img2img_filters.backends.cpu.fused.fusable_chain`.
        loss: The loss's name, a key of :data:`~img2img_filters.backends.cpu.fused.SUM_LOSSES`.
        distributed: Average gradients over the processes after each backward pass.
        channels_last: Feed the inputs in the NHWC memory format.
        threads: PyTorch threads while training (``None``: unchanged). The loops' OpenMP
            threads wait for each other after every loop; on cores other work keeps busy
            that wait makes a step several times slower than on one thread.
    """

    name = "fused"

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        device: torch.device,
        *,
        chain: list[nn.Module],
        loss: str,
        distributed: bool = False,
        channels_last: bool = False,
        threads: int | None = None,
    ) -> None:
        super().__init__(model, optimizer, loss_fn, device, channels_last=channels_last)
        self.distributed, self.thread_count = distributed, threads
        if distributed:  # no DistributedDataParallel: the same start, by hand
            broadcast_parameters(model)
        self.trainer = FusedTrainer(chain, loss, super().loss)

    def threads(self) -> AbstractContextManager:
        """``threads`` PyTorch threads for the fused loops (``None``: all the process has)."""
        return torch_threads(self.thread_count)

    @property
    def inline_batches(self) -> bool:
        """Inline while the fused loops run: they hold the interpreter lock and every core."""
        return self.trainer.failed is None

    def loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The mean loss through the fused loops (or the eager network if compiling failed)."""
        return self.trainer(inputs, targets)

    def after_backward(self) -> None:
        """Average the gradients over the processes (none in a single process)."""
        if self.distributed:
            average_gradients(self.model)
