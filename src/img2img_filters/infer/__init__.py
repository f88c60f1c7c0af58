"""Apply a trained model to images of any size, and to folders of images.

``apply_filter`` filters one image (tiled, in bounded memory, with the folded
OpenCV fast path for linear models); ``apply_folder`` filters a folder;
``Predictor`` is the reusable engine under both.
"""

from img2img_filters.infer.convert import check_image, image_to_tensor
from img2img_filters.infer.fast import FoldedFilter, folds_exactly
from img2img_filters.infer.folder import OUTPUT_FORMATS, FolderSummary, apply_folder
from img2img_filters.infer.optimize import prepare_for_inference
from img2img_filters.infer.predict import Predictor, apply_filter, model_output_range
from img2img_filters.infer.tiling import available_memory, bytes_per_pixel, choose_tile

__all__ = [
    "OUTPUT_FORMATS",
    "FoldedFilter",
    "FolderSummary",
    "Predictor",
    "apply_filter",
    "apply_folder",
    "available_memory",
    "bytes_per_pixel",
    "check_image",
    "choose_tile",
    "folds_exactly",
    "image_to_tensor",
    "model_output_range",
    "prepare_for_inference",
]
