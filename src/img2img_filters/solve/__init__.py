"""Exact answers for linear filters: least-squares fits and folded kernels.

A linear filter needs no gradient descent: its kernel is the solution of a
linear least-squares problem whose normal equations fit in memory whatever the
number of photos. :func:`fit_linear` accumulates them over a dataset and solves
them in float64; :func:`fold_linear` turns any stack of linear convolutions
into the one kernel it computes; :func:`kernel_error` compares that kernel with
a filter's exact kernel; :func:`lbfgs_refine` and :func:`gauss_newton` finish a gradient-trained model.

>>> import numpy as np
>>> from img2img_filters.data.filtered import FilteredDataset
>>> photos = np.random.default_rng(0).integers(0, 256, (8, 3, 32, 32), dtype=np.uint8)
>>> model = fit_linear(FilteredDataset(photos, "sobel:dx=1,dy=0"), kernel_size=3)
>>> kernel_error(model, "sobel:dx=1,dy=0")["max_abs"] < 1e-5
True
"""

from img2img_filters.solve.colour import fit_lut
from img2img_filters.solve.fold import fold_linear, kernel_error
from img2img_filters.solve.gray_blend import fit_gray_blend
from img2img_filters.solve.least_squares import fit_linear
from img2img_filters.solve.refine import gauss_newton, lbfgs_refine

__all__ = [
    "fit_gray_blend",
    "fit_linear",
    "fit_lut",
    "fold_linear",
    "gauss_newton",
    "kernel_error",
    "lbfgs_refine",
]
