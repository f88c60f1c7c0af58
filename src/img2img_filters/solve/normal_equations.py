"""The normal equations of a linear least-squares filter fit, accumulated in float64 batch by batch.

:func:`img2img_filters.solve.fit_linear` feeds :class:`Sums` one batch of
``(input, target)`` photos at a time: every output pixel becomes a column
``[patch; mean colour; target; 1]`` (:func:`design`) and one matrix product adds
all their outer products to one symmetric matrix (:class:`NormalEquations`), so
that memory does not grow with the number of photos. :func:`solve` then solves
the system in float64 (Cholesky, or the minimum-norm solution when it is
rank-deficient).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch

__all__ = ["CLIP_MARGIN", "NormalEquations", "Sums", "design", "solve"]

# Its notices come from the logger of fit_linear, the function users call.
_log = logging.getLogger("img2img_filters.solve.least_squares")

#: Float64 elements of one block of patches (16 MiB): big enough for fast matrix
#: products, small enough to stay in cache-friendly memory whatever ``batch_size``.
_PATCH_BLOCK = 2**21

#: Eigenvalues of the normal matrix below this fraction of its scale count as zero.
_RANK_RTOL = 1e-12


def design(
    x: torch.Tensor,
    y: torch.Tensor,
    kh: int,
    kw: int,
    workspace: torch.Tensor,
    means: torch.Tensor | None = None,
) -> torch.Tensor:
    """The columns ``[patch; mean; target; 1]`` of every output pixel, float64.

    Args:
        x: Inputs ``(B, C_in, H, W)``.
        y: Targets ``(B, C, H - kh + 1, W - kw + 1)``, aligned with the patches.
        kh: Kernel height.
        kw: Kernel width.
        workspace: A flat float64 buffer, reused between calls so that no block of
            patches is allocated (and page-faulted) anew; at least as large as the result.
        means: Each photo's mean colour ``(B, E)``, the same for all its pixels; ``None``:
            no such rows.

    Returns:
        ``(C_in*kh*kw + C + 1, B*(H-kh+1)*(W-kw+1))``, a view of ``workspace``: patch
        rows ordered ``(c, i, j)`` like a convolution weight, then the target channels,
        then a row of ones, so that one matrix product gives every sum the normal
        equations need.
    """
    b, c, h, w = x.shape
    oh, ow = h - kh + 1, w - kw + 1
    extra = 0 if means is None else means.shape[1]
    patch_rows, outputs = c * kh * kw, y.shape[1]
    unknowns = patch_rows + extra
    rows, columns = unknowns + outputs + 1, b * oh * ow
    out = workspace[: rows * columns].view(rows, columns)
    patches = out[:patch_rows].view(c, kh, kw, b, oh, ow)
    channels_first = x.transpose(0, 1)
    for i in range(kh):
        for j in range(kw):
            patches[:, i, j] = channels_first[:, :, i : i + oh, j : j + ow]
    if means is not None:
        out[patch_rows:unknowns].view(extra, b, oh * ow).copy_(means.T[:, :, None])
    out[unknowns : unknowns + outputs].view(outputs, b, oh, ow).copy_(y.transpose(0, 1))
    out[-1] = 1.0
    return out


class NormalEquations:
    """Running float64 sums of a least-squares problem ``targets ~ patches @ w + bias``.

    One symmetric matrix holds them all: for columns ``z = [a; y; 1]`` (patch,
    target, one), ``moments = sum z z^T`` contains ``sum a a^T``, ``sum a y^T``,
    ``sum a``, ``sum y``, ``sum y y^T`` and the pixel count.
    """

    def __init__(self, unknowns: int, outputs: int, device: torch.device) -> None:
        self.unknowns, self.outputs = unknowns, outputs
        size = unknowns + outputs + 1
        self.moments = torch.zeros(size, size, dtype=torch.float64, device=device)
        self._workspace = torch.empty(0, dtype=torch.float64, device=device)

    def workspace(self, elements: int) -> torch.Tensor:
        """A reusable flat float64 buffer of at least ``elements`` elements."""
        if self._workspace.numel() < elements:
            self._workspace = torch.empty(elements, dtype=torch.float64, device=self.moments.device)
        return self._workspace

    def add(self, columns: torch.Tensor) -> None:
        """Add ``columns`` ``(unknowns + outputs + 1, N)`` from :func:`design`."""
        self.moments.addmm_(columns, columns.T)

    @property
    def pixels(self) -> int:
        """The number of pixels added."""
        return round(float(self.moments[-1, -1]))

    @property
    def gram(self) -> torch.Tensor:
        """``sum a a^T`` ``(P, P)``."""
        return self.moments[: self.unknowns, : self.unknowns]

    @property
    def cross(self) -> torch.Tensor:
        """``sum a y^T`` ``(P, C)``."""
        return self.moments[: self.unknowns, self.unknowns : -1]

    @property
    def sum_a(self) -> torch.Tensor:
        """``sum a`` ``(P,)``."""
        return self.moments[: self.unknowns, -1]

    @property
    def sum_y(self) -> torch.Tensor:
        """``sum y`` ``(C,)``."""
        return self.moments[self.unknowns : -1, -1]

    @property
    def sum_yy(self) -> torch.Tensor:
        """``sum y**2`` per channel ``(C,)``."""
        return self.moments[self.unknowns : -1, self.unknowns : -1].diagonal()


def solve(
    equations: NormalEquations, *, bias: bool, ridge: float
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Solve the accumulated normal equations.

    Returns:
        ``w`` ``(P, C)``, ``b`` ``(C,)`` and a report (rank, condition number,
        residual, solver).
    """
    n = equations.pixels
    unknowns = equations.gram.shape[0]
    mean_a = equations.sum_a / n
    mean_y = equations.sum_y / n
    second_moment = equations.gram / n
    if bias:  # centre: the bias is then mean_y - w . mean_a, and the system is better conditioned
        matrix = second_moment - torch.outer(mean_a, mean_a)
        rhs = equations.cross / n - torch.outer(mean_a, mean_y)
        target_energy = equations.sum_yy / n - mean_y * mean_y
    else:
        matrix = second_moment
        rhs = equations.cross / n
        target_energy = equations.sum_yy / n
    matrix = (matrix + matrix.T) / 2
    if ridge:
        matrix = matrix + ridge * torch.eye(unknowns, dtype=matrix.dtype, device=matrix.device)
    scale = float(second_moment.diagonal().max()) if unknowns else 0.0
    eigenvalues, eigenvectors = torch.linalg.eigh(matrix)
    tolerance = _RANK_RTOL * max(scale, float(eigenvalues[-1]), 1e-300) * max(unknowns, 1)
    rank = int((eigenvalues > tolerance).sum())
    smallest, largest = float(eigenvalues[0]), float(eigenvalues[-1])
    condition = largest / smallest if smallest > tolerance else math.inf
    solver = "cholesky"
    w = None
    if rank == unknowns:
        factor, info = torch.linalg.cholesky_ex(matrix)
        if int(info) == 0:
            w = torch.cholesky_solve(rhs, factor)
    if w is None:
        total = unknowns + int(bias)
        reason = (
            f"only {n} pixels for {total} unknowns"
            if n < total
            else "the photos do not vary enough (e.g. uniform images)"
        )
        _log.warning(
            "fit_linear: the normal equations are rank-deficient (rank %d of %d): %s; "
            "returning the minimum-norm least-squares solution. "
            "Use more or more varied photos, a smaller kernel_size, or ridge > 0.",
            rank + int(bias),
            total,
            reason,
        )
        solver = "pinv"
        keep = eigenvalues > tolerance
        inverse = torch.where(keep, 1.0 / eigenvalues.clamp_min(tolerance), 0.0)
        w = eigenvectors @ (inverse[:, None] * (eigenvectors.T @ rhs))
    b = mean_y - w.T @ mean_a if bias else torch.zeros_like(mean_y)
    # Mean squared residual from the same sums: E[(y - w.a - b)^2] = energy - 2 w.rhs + w^T M w.
    # (Without ridge at the optimum this is energy - w.rhs; cancellation limits it to ~1e-7 of
    # the target's RMS.)
    plain = matrix - ridge * torch.eye(unknowns, dtype=matrix.dtype, device=matrix.device)
    residual = target_energy - 2 * (w * rhs).sum(0) + (w * (plain @ w)).sum(0)
    residual = residual.clamp_min(0.0)
    report = {
        "rank": rank + int(bias),
        "unknowns": unknowns + int(bias),
        "condition_number": condition,
        "solver": solver,
        "residual_rms": math.sqrt(float(residual.mean())),
        "residual_rms_per_channel": [math.sqrt(float(v)) for v in residual],
        "target_rms": math.sqrt(float((equations.sum_yy / n).mean())),
    }
    return w, b, report


class Sums:
    """The normal equations of :func:`fit_linear`, accumulated batch by batch, and their counts.

    Args:
        k: The kernel's side.
        margins: ``(rows, columns)`` left out at each side of every photo.
        device: Where the sums are kept.
        clip: The targets' clip range (clipped pixels are left out), or ``None``.
        image_mean: Whether each photo's mean colour is an unknown's input too.
    """

    def __init__(
        self,
        k: int,
        margins: tuple[int, int],
        device: torch.device,
        clip: tuple[float, float] | None,
        image_mean: bool,
    ) -> None:
        self.k, self.margins, self.device = k, margins, device
        self.clip, self.image_mean = clip, image_mean
        self.equations: NormalEquations | None = None
        self.channels: tuple[int, int] | None = None
        self.images = self.skipped = self.clipped = 0
        self.out_of_time = False

    def add(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        """Add a batch: inputs ``(B, C_in, H, W)``, targets ``(B, C, H, W)``."""
        k, (margin_h, margin_w) = self.k, self.margins
        channels = (inputs.shape[1], targets.shape[1])
        if self.equations is None:
            self.channels = channels
            extra = channels[0] if self.image_mean else 0
            self.equations = NormalEquations(channels[0] * k * k + extra, channels[1], self.device)
        elif channels != self.channels:
            raise ValueError(
                f"dataset: every pair must have {self.channels[0]} input and "
                f"{self.channels[1]} target channels; got {channels[0]} and {channels[1]}"
            )
        height, width = inputs.shape[-2:]
        self.images += inputs.shape[0]
        if height - 2 * margin_h < 1 or width - 2 * margin_w < 1:
            self.skipped += inputs.shape[0]
            return
        radius = k // 2
        x = inputs[
            ...,
            margin_h - radius : height - margin_h + radius,
            margin_w - radius : width - margin_w + radius,
        ].to(self.device)
        y = targets[..., margin_h : height - margin_h, margin_w : width - margin_w].to(self.device)
        means = inputs.double().mean(dim=(2, 3)).to(self.device) if self.image_mean else None
        per_photo = (self.equations.unknowns + channels[1] + 1) * y.shape[-2] * y.shape[-1]
        step = max(1, _PATCH_BLOCK // per_photo)
        workspace = self.equations.workspace(min(step, x.shape[0]) * per_photo)
        for first in range(0, x.shape[0], step):
            chunk = y[first : first + step]
            part = None if means is None else means[first : first + step]
            columns = design(x[first : first + step], chunk, k, k, workspace, part)
            if self.clip is not None:
                kept = unclipped(chunk, self.clip)
                self.clipped += int(kept.numel() - kept.sum())
                columns.mul_(kept)
            self.equations.add(columns)

    def solvable(self) -> NormalEquations:
        """The sums, once checked: some pixels, all finite.

        Raises:
            ValueError: When no pixel was added (photos too small, every target clipped)
                or a sum is not finite.
        """
        equations = self.equations
        if equations is not None and equations.pixels == 0 and self.clipped:
            raise ValueError(
                f"fit_linear: every target pixel is at a limit of clip={self.clip}: nothing is "
                "left to fit; pass clip=None, or photos whose targets are not all clipped"
            )
        if equations is None or equations.pixels == 0:
            margin_h, margin_w = self.margins
            raise ValueError(
                f"fit_linear: no pixel to fit: photos must be larger than {2 * margin_h + 1}x"
                f"{2 * margin_w + 1} for kernel_size={self.k}; got {self.images} photos, "
                "all too small"
            )
        if not torch.isfinite(equations.moments).all():
            raise ValueError("fit_linear: the inputs or targets contain NaN or infinite values")
        return equations


#: Targets within this of a clip limit count as clipped (half an 8-bit step).
CLIP_MARGIN = 0.5 / 255


def unclipped(targets: torch.Tensor, clip: tuple[float, float]) -> torch.Tensor:
    """Per pixel of ``targets`` ``(B, C, H, W)``: 1.0 where no channel is at a clip limit.

    Returns:
        ``(B*H*W,)`` float64, in the order of :func:`design`'s columns.
    """
    low, high = clip
    inside = (targets > low + CLIP_MARGIN) & (targets < high - CLIP_MARGIN)
    return inside.all(dim=1).reshape(-1).to(torch.float64)
