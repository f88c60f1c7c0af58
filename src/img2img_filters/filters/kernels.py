"""Kernels as arrays: OpenCV's generators, the random kernels, and kernels read from rows or files.

The linear stages (:mod:`img2img_filters.filters.linear`) build their kernels
here, as float64 ``(kh, kw)`` arrays whose values OpenCV itself would use.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from img2img_filters.limits import MAX_FILTER_NUMBER

__all__ = ["MAX_KSIZE", "load_kernel_file", "parse_kernel_rows", "random_kernel"]

#: The largest kernel side accepted anywhere (OpenCV's own limit for Sobel apertures).
MAX_KSIZE = 31


def _centre(kernel: np.ndarray) -> np.ndarray:
    """Pad a kernel with zeros so that OpenCV's default anchor ``(kw // 2, kh // 2)`` is central."""
    kh, kw = kernel.shape
    bottom = 1 if kh % 2 == 0 else 0
    right = 1 if kw % 2 == 0 else 0
    return np.pad(kernel, ((0, bottom), (0, right)))


def _deriv_kernel(dx: int, dy: int, ksize: int) -> np.ndarray:
    """``outer(ky, kx)`` from ``cv2.getDerivKernels`` as float64."""
    kx, ky = cv2.getDerivKernels(dx, dy, ksize, ktype=cv2.CV_32F)
    return np.outer(ky.ravel().astype(np.float64), kx.ravel().astype(np.float64))


def _gaussian_kernel(ksize: int, sigma: float, sigma_y: float | None) -> np.ndarray:
    """The 2-D kernel of ``cv2.GaussianBlur(ksize=(ksize, ksize), sigma, sigma_y)`` on float32."""
    sigma_y = sigma_y or sigma
    kx = cv2.getGaussianKernel(ksize, sigma, cv2.CV_32F).ravel().astype(np.float64)
    ky = cv2.getGaussianKernel(ksize, sigma_y, cv2.CV_32F).ravel().astype(np.float64)
    return np.outer(ky, kx)


def random_kernel(ksize: int, seed: int, distribution: str) -> np.ndarray:
    """A reproducible random kernel ``(ksize, ksize)``.

    Args:
        ksize: Side of the kernel.
        seed: Seed of ``numpy.random.default_rng``.
        distribution: ``"uniform"``: entries in [0, 1) (the study's random filter);
            ``"normal"``: standard normal entries, minus their mean, divided by their
            absolute sum (zero mean, outputs within [-1, 1]).

    Returns:
        float64 kernel, rounded to float32 values so that filters and OpenCV agree.
    """
    rng = np.random.default_rng(seed)
    if distribution == "uniform":
        kernel = rng.random((ksize, ksize))
    else:
        kernel = rng.standard_normal((ksize, ksize))
        kernel -= kernel.mean()
        kernel /= np.abs(kernel).sum()
    return kernel.astype(np.float32).astype(np.float64)


def parse_kernel_rows(text: str, spec: str = "kernel") -> np.ndarray:
    """Parse inline kernel rows: numbers separated by spaces, rows by ``;``.

    Args:
        text: e.g. ``"1 0 -1; 2 0 -2; 1 0 -1"``.
        spec: The spec, for error messages.

    Returns:
        float64 ``(kh, kw)``.

    Raises:
        ValueError: If the rows are not numbers, are empty or differ in length.
    """
    try:
        rows = [[float(v) for v in row.split()] for row in text.split(";") if row.strip()]
    except ValueError:
        raise ValueError(
            f"filter {spec!r}: parameter 'rows' must be numbers separated by spaces, rows by ';' "
            f"(e.g. '1 0 -1;2 0 -2;1 0 -1'); got {text!r}"
        ) from None
    return _check_kernel_rows(rows, spec, "rows", text)


def load_kernel_file(path: str | Path, spec: str = "kernel") -> np.ndarray:
    """Read a kernel from a ``.npy`` file or a text file of rows.

    A text file holds one row per line, numbers separated by spaces or commas;
    blank lines and ``#`` comments are skipped.

    Args:
        path: The file.
        spec: The spec, for error messages.

    Returns:
        float64 ``(kh, kw)``.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it does not hold a non-empty 2-D array of finite numbers.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"filter {spec!r}: parameter 'path': kernel file {str(path)!r} not found"
        )
    given = str(path)
    try:
        if path.suffix.lower() == ".npy":
            array = np.load(path, allow_pickle=False)
            if array.dtype.kind not in "biuf":
                raise ValueError(f"dtype {array.dtype} is not numeric")
            if array.ndim != 2:
                raise ValueError(f"shape {array.shape} is not 2-D")
            rows = array.astype(np.float64).tolist()
        else:
            text = path.read_text()
            lines = (line.split("#", 1)[0].replace(",", " ") for line in text.splitlines())
            rows = [[float(v) for v in line.split()] for line in lines if line.strip()]
    except (ValueError, OSError, UnicodeDecodeError) as error:
        raise ValueError(
            f"filter {spec!r}: parameter 'path' must name a file holding a 2-D array of numbers; "
            f"{given!r} does not ({error})"
        ) from None
    return _check_kernel_rows(rows, spec, "path", given)


def _check_kernel_rows(rows: list[list[float]], spec: str, param: str, given: str) -> np.ndarray:
    """Rows of numbers as a kernel, or a ``ValueError`` saying what is wrong with them."""
    problem = ""
    if not rows or not rows[0]:
        problem = "it is empty"
    elif len({len(row) for row in rows}) != 1:
        problem = f"its rows differ in length ({sorted({len(row) for row in rows})})"
    kernel = np.zeros((0, 0)) if problem else np.asarray(rows, dtype=np.float64)
    if not problem and not np.isfinite(kernel).all():
        problem = "it holds inf or nan"
    if not problem and np.abs(kernel).max() > MAX_FILTER_NUMBER:
        problem = f"a weight exceeds {MAX_FILTER_NUMBER:g} in magnitude"
    if not problem and max(kernel.shape) > MAX_KSIZE:
        problem = f"its shape {kernel.shape} exceeds {MAX_KSIZE} on a side"
    if problem:
        raise ValueError(
            f"filter {spec!r}: parameter {param!r} must give a 2-D array of finite numbers of "
            f"magnitude <= {MAX_FILTER_NUMBER:g}, rows of equal length, sides 1-{MAX_KSIZE}; "
            f"got {given!r}: {problem}"
        )
    return kernel
