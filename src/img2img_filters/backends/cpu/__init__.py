"""The CPU-only training engines and what they are made of.

* :mod:`~img2img_filters.backends.cpu.limits`: which convolutions OpenCV takes; thread settings.
* :mod:`~img2img_filters.backends.cpu.opencv_conv`: few-channel convolutions through OpenCV.
* :mod:`~img2img_filters.backends.cpu.fused`: a chain of them as fused loops for ``torch.compile``.
* :mod:`~img2img_filters.backends.cpu.engines`: :class:`OpenCVEngine` and :class:`FusedEngine`.
"""

from img2img_filters.backends.cpu.engines import FusedEngine, OpenCVEngine
from img2img_filters.backends.cpu.fused import SUM_LOSSES, FusedTrainer, fusable_chain
from img2img_filters.backends.cpu.limits import (
    MAX_CHANNEL_PAIRS,
    MAX_KERNEL_SIDE,
    has_tiny_convs,
    is_tiny_conv,
    only_tiny_convs,
    torch_threads,
)
from img2img_filters.backends.cpu.opencv_conv import tiny_conv2d, tiny_conv_mode

__all__ = [
    "MAX_CHANNEL_PAIRS",
    "MAX_KERNEL_SIDE",
    "SUM_LOSSES",
    "FusedEngine",
    "FusedTrainer",
    "OpenCVEngine",
    "fusable_chain",
    "has_tiny_convs",
    "is_tiny_conv",
    "only_tiny_convs",
    "tiny_conv2d",
    "tiny_conv_mode",
    "torch_threads",
]
