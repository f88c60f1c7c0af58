"""Architectures: a registry of fully-convolutional networks that keep the image size."""

from img2img_filters.models import box_cascade as _box_cascade  # noqa: F401  (registers box_cascade)
from img2img_filters.models import can as _can  # noqa: F401  (registers can)
from img2img_filters.models import clipped as _clipped  # noqa: F401  (registers clipped_linear)
from img2img_filters.models import domain_transform as _domain  # noqa: F401  (registers domain_transform)
from img2img_filters.models import equalisation as _equalisation  # noqa: F401  (registers equalisation)
from img2img_filters.models import gray_blend as _gray_blend  # noqa: F401  (registers gray_blend)
from img2img_filters.models import neighbourhood as _neighbourhood  # noqa: F401  (registers neighbourhood)
from img2img_filters.models import pointwise as _pointwise  # noqa: F401  (registers lut3d and pixelmlp)
from img2img_filters.models import stretch as _stretch  # noqa: F401  (registers stretch)
from img2img_filters.models import structured as _structured  # noqa: F401  (registers structured)
from img2img_filters.models import study as _study  # noqa: F401  (registers study and linear)
from img2img_filters.models.box_cascade import BoxCascadeNet
from img2img_filters.models.can import ContextAggregationNet
from img2img_filters.models.clipped import ClippedLinearNet
from img2img_filters.models.domain_transform import DomainTransformNet
from img2img_filters.models.equalisation import AdaptiveEqualisationNet
from img2img_filters.models.gray_blend import GrayBlendNet
from img2img_filters.models.layers import BorderConv2d
from img2img_filters.models.neighbourhood import NeighbourhoodNet
from img2img_filters.models.pointwise import ColourLUT, PixelMLP
from img2img_filters.models.registry import (
    ArchEntry,
    create_img2img_model,
    get_arch,
    list_archs,
    model_config,
    receptive_field,
    register_arch,
    validate_options,
)
from img2img_filters.models.stretch import LevelStretchNet
from img2img_filters.models.structured import StructuredNet
from img2img_filters.models.study import LinearNet, StudyNet

__all__ = [
    "AdaptiveEqualisationNet",
    "ArchEntry",
    "BorderConv2d",
    "BoxCascadeNet",
    "ClippedLinearNet",
    "ColourLUT",
    "ContextAggregationNet",
    "DomainTransformNet",
    "GrayBlendNet",
    "LevelStretchNet",
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
