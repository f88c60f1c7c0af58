"""Finishing a trained model: L-BFGS on the MSE within a time limit, Gauss-Newton in float64.

Both take a ``seconds`` limit (what a run's time budget leaves them) and show a
progress bar with ``progress=True`` (only when stderr is a terminal).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jacfwd
from tqdm.auto import tqdm

from img2img_filters.devices import DeviceLike, resolve_device
from img2img_filters.solve.batches import check_seconds, iter_batches

__all__ = ["RefineReport", "gauss_newton", "lbfgs_refine"]


@dataclass(frozen=True)
class RefineReport:
    """How a polish of a trained model went.

    Attributes:
        method: ``"l-bfgs"`` or ``"gauss-newton"``.
        loss_before: The MSE before the polish.
        loss_after: The MSE of the weights the model ends with.
        iterations: Iterations (L-BFGS) or steps taken (Gauss-Newton).
        images: Photos in the objective.
        seconds: Wall time.
        stopped: ``"steps"``, ``"converged"`` or ``"time"`` (the time limit was reached:
            see :attr:`out_of_time`).
        time_limit: The seconds it was given (``None``: no limit).
    """

    method: str
    loss_before: float
    loss_after: float
    iterations: int
    images: int
    seconds: float
    stopped: str
    time_limit: float | None = None

    @property
    def out_of_time(self) -> bool:
        """Whether the polish stopped because its time limit (the run's budget) ran out."""
        return self.stopped == "time"

    def as_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return asdict(self)


def _bar(total: int, method: str, progress: bool) -> Any:
    """The polish's progress bar over its iterations (shown only on a terminal)."""
    return tqdm(
        total=total,
        desc=f"{method} polish",
        unit="it",
        leave=False,
        disable=None if progress else True,  # None: a bar only when stderr is a terminal
    )


def _check_polish(steps: object, images: object, seconds: object) -> None:
    """The options both polishes share: positive ``steps`` and ``images``, a time limit."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer; got {steps!r}")
    if isinstance(images, bool) or not isinstance(images, int) or images < 1:
        raise ValueError(f"images must be a positive integer; got {images!r}")
    check_seconds(seconds)


class _DeadlineError(Exception):
    """Raised inside the L-BFGS objective when the polish runs out of time."""


# Over 80 lines for its docstring and one optimiser call: the closure shares the best weights,
# the losses and the deadline with the code around it.
def lbfgs_refine(
    model: nn.Module,
    dataset: Any,
    *,
    steps: int = 100,
    images: int = 128,
    seconds: float | None = None,
    batch_size: int = 32,
    device: DeviceLike = "cpu",
    history_size: int = 20,
    dtype: torch.dtype | None = None,
    progress: bool = False,
) -> RefineReport:
    """Polish a trained model with full-batch L-BFGS on the MSE, within a time limit.

    The objective is the MSE over every pixel of the first ``images`` photos, the
    model in eval mode; the optimiser L-BFGS with a strong-Wolfe line search, stopped after ``steps``
    iterations, at convergence, or once ``seconds`` have passed (checked before each
    chunk of photos of an evaluation of the objective); the model then takes the best
    weights evaluated.
    Where Adam with a constant learning rate hovers around a minimum, L-BFGS
    descends into it: a linear model reaches its exact kernel, a network whose
    head is linear in its inputs (the sorted window of a rank filter) its best
    weights.

    Args:
        model: The model; moved to ``device`` and updated in place.
        dataset: A ``FilteredDataset`` (or any dataset of ``(input, target)`` pairs).
        steps: Most L-BFGS iterations.
        images: Photos in the objective.
        seconds: Stop once this long has passed since the call (``None``: no limit); the
            first evaluation of the objective always completes.
        batch_size: Photos per chunk of the objective.
        device: Where the model and photos live.
        history_size: L-BFGS memory.
        dtype: Polish in this precision (e.g. ``torch.float64``), then return to the
            model's own: a linear model's loss is a quadratic whose weakest directions
            (how the kernel splits between the strongly correlated R, G and B) change
            it by less than float32 resolves.
        progress: Show a progress bar over the iterations (only when stderr is a terminal).

    Returns:
        The :class:`RefineReport` (``stopped``: ``"steps"``, ``"converged"`` or ``"time"``);
        ``model.refine_report`` holds it as a dict too, for older callers.
    """
    started = time.perf_counter()
    _check_polish(steps, images, seconds)
    device = resolve_device(device)
    model.to(device)
    chunks = list(iter_batches(dataset, batch_size, device, images))
    elements = sum(y.numel() for _, y in chunks)
    own_dtype = next(model.parameters()).dtype if dtype is not None else None
    if dtype is not None:
        model.to(dtype)
        chunks = [(x.to(dtype), y.to(dtype)) for x, y in chunks]
    was_training = model.training
    model.eval()
    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters:
        model.train(was_training)
        raise ValueError(f"lbfgs_refine: {type(model).__name__} has no trainable parameter")
    optimizer = torch.optim.LBFGS(
        parameters,
        lr=1.0,
        max_iter=steps,
        history_size=history_size,
        tolerance_grad=1e-12,
        tolerance_change=1e-16,
        line_search_fn="strong_wolfe",
    )
    best = {"loss": math.inf, "weights": [p.detach().clone() for p in parameters]}
    losses: list[float] = []

    bar = _bar(steps, "l-bfgs", progress)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        total = 0.0
        for x, y in chunks:
            if losses and seconds is not None and time.perf_counter() - started > seconds:
                raise _DeadlineError  # the weights of this evaluation are not kept
            loss = F.mse_loss(model(x), y, reduction="sum") / elements
            loss.backward()
            total += float(loss.detach())
        losses.append(total)
        if total < best["loss"]:  # the weights this loss belongs to
            best["loss"] = total
            best["weights"] = [p.detach().clone() for p in parameters]
        bar.update(int(optimizer.state[parameters[0]].get("n_iter", 0)) - bar.n)
        bar.set_postfix(mse=f"{best['loss']:.3e}", refresh=False)
        return torch.tensor(total)

    stopped = "steps"
    try:
        optimizer.step(closure)
    except _DeadlineError:
        stopped = "time"
    finally:
        bar.close()
        model.train(was_training)
    with torch.no_grad():
        for parameter, weight in zip(parameters, best["weights"], strict=True):
            parameter.copy_(weight)
    if own_dtype is not None:
        model.to(own_dtype)
    iterations = int(optimizer.state[parameters[0]].get("n_iter", 0))
    if stopped == "steps" and iterations < steps:
        stopped = "converged"
    if not math.isfinite(best["loss"]):  # no finite loss: the weights stay as they were
        best["loss"] = losses[0]
    report = RefineReport(
        method="l-bfgs",
        loss_before=losses[0],
        loss_after=best["loss"],
        iterations=iterations,
        images=sum(x.shape[0] for x, _ in chunks),
        seconds=time.perf_counter() - started,
        stopped=stopped,
        time_limit=None if seconds is None else float(seconds),
    )
    model.refine_report = report.as_dict()
    return report


class _FlatObjective:
    """The MSE of a model over some photos, as a function of its parameters in one flat vector.

    Args:
        model: The model (its trainable parameters are the unknowns).
        chunks: ``(input, target)`` photo batches, in the model's dtype and device.
    """

    def __init__(self, model: nn.Module, chunks: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.model, self.chunks = model, chunks
        self.params = dict(model.named_parameters())
        self.names = [name for name, p in model.named_parameters() if p.requires_grad]
        self.shapes = [self.params[name].shape for name in self.names]
        self.sizes = [self.params[name].numel() for name in self.names]
        self.count = sum(self.sizes)
        self.pixels = sum(y.numel() for _, y in chunks)

    def start(self) -> torch.Tensor:
        """The model's parameters now, flattened ``(count,)``."""
        return torch.cat([self.params[name].detach().flatten() for name in self.names])

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{name: tensor}`` views of ``flat``."""
        parts = zip(self.names, flat.split(self.sizes), self.shapes, strict=True)
        return {name: part.view(shape) for name, part, shape in parts}

    def outputs(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The model's outputs for ``x`` with the parameters ``flat``, flattened."""
        return functional_call(self.model, self.unflatten(flat), (x,)).flatten()

    def loss(self, flat: torch.Tensor) -> float:
        """The MSE over every pixel of every chunk."""
        with torch.no_grad():
            total = sum(
                float((self.outputs(flat, x) - y.flatten()).square().sum()) for x, y in self.chunks
            )
        return total / self.pixels

    def normal_equations(
        self, flat: torch.Tensor, block: int, out_of_time: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``J^T J`` ``(count, count)`` and ``J^T r`` ``(count,)`` at ``flat``, on the CPU.

        ``J`` is made by forward-mode differentiation, ``block`` photos at a time;
        ``out_of_time()`` is asked before each block and stops the step with
        :class:`_DeadlineError`.
        """
        device = flat.device
        normal = torch.zeros(self.count, self.count, dtype=torch.float64, device=device)
        gradient = torch.zeros(self.count, dtype=torch.float64, device=device)
        for first in range(0, len(self.chunks), block):
            if out_of_time():
                raise _DeadlineError
            x = torch.cat([c[0] for c in self.chunks[first : first + block]])
            y = torch.cat([c[1] for c in self.chunks[first : first + block]]).flatten()
            jacobian = jacfwd(self.outputs)(flat, x)  # (pixels, parameters)
            with torch.no_grad():
                residual = self.outputs(flat, x) - y
            normal.addmm_(jacobian.T, jacobian)
            gradient.addmv_(jacobian.T, residual)
        # The small damped system is solved on the CPU: the "gelsd" driver exists only there.
        return normal.cpu(), gradient.cpu()

    def write(self, flat: torch.Tensor) -> None:
        """Set the model's parameters to ``flat``."""
        with torch.no_grad():
            for name, value in self.unflatten(flat).items():
                self.params[name].copy_(value)


#: Levenberg-Marquardt damping tried in turn, as fractions of the mean curvature.
_DAMPING = (0.0, 1e-6, 1e-4, 1e-2, 1.0)


# Over 80 lines only for its docstring.
def gauss_newton(
    model: nn.Module,
    dataset: Any,
    *,
    steps: int = 3,
    images: int = 32,
    device: DeviceLike = "cpu",
    max_elements: int = 2**24,
    seconds: float | None = None,
    progress: bool = False,
) -> RefineReport:
    """Finish a small model with Gauss-Newton steps on the MSE, in float64.

    Each step linearises the model's output in its parameters, ``y(w + d) ~ y(w) + J d``,
    accumulates the normal equations ``J^T J`` and ``J^T r`` over every pixel of the
    first ``images`` photos (``J`` by forward-mode differentiation, blocks of photos at a
    time), and moves to their least-squares solution (the minimum-norm one where the
    parameters are redundant, as in a stack of convolutions), damped (Levenberg-Marquardt)
    when the plain step does not lower the loss. For a one-layer linear
    model the MSE is a quadratic and the first step lands on its exact minimum: the
    kernel that :func:`img2img_filters.solve.fit_linear` computes, whatever gradient descent
    left, including along the directions (how the kernel splits between the strongly
    correlated R, G and B) that first-order methods in float32 never resolve. A deeper
    linear stack converges in a few steps.

    Args:
        model: The model (a linear one, or any with few parameters); updated in place.
        dataset: A ``FilteredDataset`` (or any dataset of ``(input, target)`` pairs).
        steps: Gauss-Newton steps; stops early when a step no longer lowers the loss.
        images: Photos in the objective.
        device: Where to compute.
        max_elements: Largest Jacobian block (pixels x parameters) held at once.
        seconds: Stop once this long has passed since the call (checked before each
            block of the Jacobian; a step cut short is not taken), ``None``: no limit. The
            first step is always taken: for a linear model it is the whole gain, and its
            cost is bounded by ``images`` and the parameters.
        progress: Show a progress bar over the steps (only when stderr is a terminal).

    Returns:
        The :class:`RefineReport`; ``model.refine_report`` holds it as a dict too, for
        older callers.
    """
    started = time.perf_counter()
    _check_polish(steps, images, seconds)
    device = resolve_device(device)
    own_dtype = next(model.parameters()).dtype
    model.to(device=device, dtype=torch.float64)
    was_training = model.training
    model.eval()
    chunks = [
        (x.to(torch.float64), y.to(torch.float64))
        for x, y in iter_batches(dataset, 1, device, images)
    ]
    objective = _FlatObjective(model, chunks)
    flat = objective.start()
    losses = [objective.loss(flat)]
    stopped = "steps"
    block = max(1, max_elements // (max(1, chunks[0][1].numel()) * objective.count))
    identity = torch.eye(objective.count, dtype=torch.float64)
    bar = _bar(steps, "gauss-newton", progress)

    def out_of_time() -> bool:  # the first step is always taken
        late = seconds is not None and time.perf_counter() - started > seconds
        return len(losses) > 1 and late

    try:
        for _ in range(steps):
            normal, gradient = objective.normal_equations(flat, block, out_of_time)
            scale = float(normal.diagonal().mean())
            for damping in _DAMPING:  # Gauss-Newton first, then Levenberg-Marquardt
                matrix = normal + damping * scale * identity
                solution = torch.linalg.lstsq(matrix, gradient, rcond=1e-13, driver="gelsd")
                step = solution.solution.to(flat.device)
                loss = objective.loss(flat - step)
                if loss < losses[-1]:
                    break
            else:
                stopped = "converged"
                break
            flat = flat - step
            losses.append(loss)
            bar.update(1)
            bar.set_postfix(mse=f"{loss:.3e}", refresh=False)
    except _DeadlineError:
        stopped = "time"
    finally:
        bar.close()
        objective.write(flat)
        model.to(own_dtype)
        model.train(was_training)
    report = RefineReport(
        method="gauss-newton",
        loss_before=losses[0],
        loss_after=losses[-1],
        iterations=len(losses) - 1,
        images=len(chunks),
        seconds=time.perf_counter() - started,
        stopped=stopped,
        time_limit=None if seconds is None else float(seconds),
    )
    model.refine_report = report.as_dict()
    return report
