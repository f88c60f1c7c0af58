"""The running training loss of an epoch: read back in groups of steps, checked for NaN and Inf."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from img2img_filters.backends.engine import process_group
from img2img_filters.train.config import CUDA_CHECK_EVERY, TrainingDivergedError

__all__ = ["EpochLosses"]


class EpochLosses:
    """The training losses of one epoch, read back from the device in groups of steps.

    Reading a loss forces the device to finish its queue; on a GPU that is done
    every :data:`CUDA_CHECK_EVERY` steps, on the CPU (where it costs nothing)
    every step. Each read checks for NaN and Inf (the first bad step is named),
    with the same outcome on every process.
    """

    def __init__(self, device: torch.device, epoch: int, bar: Any) -> None:
        self.device, self.epoch, self.bar = device, epoch, bar
        self.every = CUDA_CHECK_EVERY if device.type == "cuda" else 1
        self.pending: list[tuple[int, torch.Tensor, int]] = []
        self.total, self.count = 0.0, 0

    def add(self, step: int, loss: torch.Tensor, count: int) -> bool:
        """Record a step's mean loss over ``count`` items; ``True`` when it is time to :meth:`read`."""
        self.pending.append((step, loss.detach(), count))
        return len(self.pending) >= self.every

    def read(self) -> None:
        """Bring the pending losses back, add them up and check them; update the bar."""
        if not self.pending:
            return
        values = torch.stack([loss for _, loss, _ in self.pending]).double()
        counts = [count for _, _, count in self.pending]
        bad = (~torch.isfinite(values)).double()
        _, world = process_group()
        if world > 1:
            dist.all_reduce(bad)
        flags = bad.tolist()
        if any(flags):
            index = next(i for i, flag in enumerate(flags) if flag)
            step = self.pending[index][0]
            raise TrainingDivergedError(
                f"the training loss became {float(values[index])} at epoch {self.epoch}, "
                f"step {step}; lower the learning rate. The last good state and best model "
                "are kept."
            )
        self.total += float(sum(v * c for v, c in zip(values.tolist(), counts, strict=True)))
        self.count += sum(counts)
        self.bar.update(len(self.pending))
        if self.count:
            self.bar.set_postfix(loss=f"{self.total / self.count:.4g}", refresh=False)
        self.pending.clear()
