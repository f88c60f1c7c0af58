"""Architectures: a registry of fully-convolutional networks that keep the image size."""

from img2img.models import can as _can  # noqa: F401  (registers can)
from img2img.models import neighbourhood as _neighbourhood  # noqa: F401  (registers neighbourhood)
from img2img.models import pointwise as _pointwise  # noqa: F401  (registers lut3d and pixelmlp)
from img2img.models import structured as _structured  # noqa: F401  (registers structured)
from img2img.models import study as _study  # noqa: F401  (registers study and linear)
from img2img.models.can import ContextAggregationNet
from img2img.models.layers import BorderConv2d
from img2img.models.neighbourhood import NeighbourhoodNet
from img2img.models.pointwise import ColourLUT, PixelMLP
from img2img.models.registry import (
    ArchEntry,
    create_img2img_model,
    get_arch,
    list_archs,
    model_config,
    receptive_field,
    register_arch,
    validate_options,
)
from img2img.models.structured import StructuredNet
from img2img.models.study import LinearNet, StudyNet

__all__ = [
    "ArchEntry",
    "BorderConv2d",
    "ColourLUT",
    "ContextAggregationNet",
    "LinearNet",
    "NeighbourhoodNet",
    "PixelMLP",
    "StructuredNet",
    "StudyNet",
    "create_img2img_model",
    "get_arch",
    "list_archs",
    "model_config",
    "receptive_field",
    "register_arch",
    "validate_options",
]
