"""The filters img2img learns: a registry of OpenCV-identical operators and a spec language.

>>> from img2img_filters.filters import create_filter
>>> f = create_filter("gray|gaussian:ksize=3|sobel:dx=1,dy=1")
>>> f.linear, tuple(f.kernel.shape)
(True, (1, 3, 5, 5))
"""

from img2img_filters.filters import linear as _linear  # noqa: F401  (registers the linear filters)
from img2img_filters.filters import nonlinear as _nonlinear  # noqa: F401  (registers the others)
from img2img_filters.filters.base import (
    FilterEntry,
    Param,
    Stage,
    format_filter_table,
    list_filters,
    parse_spec,
)
from img2img_filters.filters.chain import Filter
from img2img_filters.filters.convolution import filter2d
from img2img_filters.filters.create import create_filter
from img2img_filters.filters.external import CallableFilter, CommandFilter, TeacherFilter
from img2img_filters.filters.ops import GRAY_WEIGHTS, rgb_to_gray

__all__ = [
    "GRAY_WEIGHTS",
    "CallableFilter",
    "CommandFilter",
    "Filter",
    "FilterEntry",
    "Param",
    "Stage",
    "TeacherFilter",
    "create_filter",
    "filter2d",
    "format_filter_table",
    "list_filters",
    "parse_spec",
    "rgb_to_gray",
]
