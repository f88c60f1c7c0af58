"""Tests of img2img_filters.border: OpenCV's border modes on tensors, checked against cv2.copyMakeBorder."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
import torch

from img2img_filters.border import BORDER_MODES, CV2_BORDER_FLAGS, check_border, pad2d

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cv_pad(
    image: np.ndarray, left: int, right: int, top: int, bottom: int, border: str
) -> np.ndarray:
    """OpenCV's padding of one ``(H, W)`` or ``(H, W, C)`` image (zeros for ``constant``)."""
    return cv2.copyMakeBorder(image, top, bottom, left, right, CV2_BORDER_FLAGS[border], value=0)


def test_modes_and_flags_agree() -> None:
    assert set(BORDER_MODES) == set(CV2_BORDER_FLAGS)
    assert CV2_BORDER_FLAGS["reflect101"] == cv2.BORDER_DEFAULT


@pytest.mark.parametrize("border", sorted(BORDER_MODES))
@pytest.mark.parametrize("size", [(1, 1), (1, 5), (2, 3), (4, 7), (7, 4)])
def test_pad2d_matches_copymakeborder_small_images(border: str, size: tuple[int, int]) -> None:
    """Every pad from 0 to 9 on each side, most of them larger than the image."""
    rng = np.random.default_rng(sum(size))
    image = rng.random(size, dtype=np.float32)
    tensor = torch.from_numpy(image)
    for left, right, top, bottom in itertools.product((0, 2, 9), (0, 1, 5), (0, 1, 6), (0, 3, 11)):
        ours = pad2d(tensor, left, right, top, bottom, border).numpy()
        expected = _cv_pad(image, left, right, top, bottom, border)
        np.testing.assert_array_equal(
            ours, expected, err_msg=f"{border} {(left, right, top, bottom)}"
        )


@pytest.mark.parametrize("border", sorted(BORDER_MODES))
def test_pad2d_matches_copymakeborder_on_a_real_photo(border: str, large_photo: np.ndarray) -> None:
    """A non-square 200x300 RGB photo, pads inside and beyond the image, on a batch with channels."""
    image = large_photo.astype(np.float32) / 255.0
    batch = torch.from_numpy(image).permute(2, 0, 1)[None]  # (1, 3, 200, 300)
    for left, right, top, bottom in [
        (1, 1, 1, 1),
        (3, 0, 0, 5),
        (0, 299, 199, 0),
        (450, 301, 201, 650),
    ]:
        ours = pad2d(batch, left, right, top, bottom, border)[0].permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(ours, _cv_pad(image, left, right, top, bottom, border))


def test_pad2d_keeps_leading_axes_dtype_and_device() -> None:
    x = torch.rand(2, 3, 4, 5, 6, dtype=torch.float64)
    out = pad2d(x, 1, 2, 3, 4, "reflect")
    assert out.shape == (2, 3, 4, 12, 9)
    assert out.dtype == x.dtype and out.device == x.device
    torch.testing.assert_close(out[..., 3:-4, 1:-2], x, rtol=0, atol=0)
    two_d = pad2d(torch.arange(6.0).view(2, 3), 1, 1, 1, 1, "replicate")
    assert two_d.shape == (4, 5)


@pytest.mark.parametrize("border", sorted(BORDER_MODES))
def test_pad2d_is_differentiable(border: str) -> None:
    """The gradient of a sum of the padded tensor counts how often each pixel is copied."""
    x = torch.rand(1, 1, 3, 4, dtype=torch.float64, requires_grad=True)
    pad2d(x, 5, 2, 4, 1, border).sum().backward()
    copies = _cv_pad(np.arange(12, dtype=np.float64).reshape(3, 4), 5, 2, 4, 1, border)
    counts = np.array([(copies == i).sum() for i in range(12)], dtype=np.float64).reshape(3, 4)
    if border == "constant":  # the zero padding is not a copy of pixel 0
        counts[0, 0] = 1
    np.testing.assert_array_equal(x.grad[0, 0].numpy(), counts)


def test_pad2d_on_the_meta_device() -> None:
    """Padding builds its indices on the tensor's device; nothing assumes the CPU."""
    x = torch.empty(2, 3, 5, 4, device="meta")
    for border in BORDER_MODES:
        out = pad2d(x, 7, 1, 0, 9, border)
        assert out.device.type == "meta" and out.shape == (2, 3, 14, 12)


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("reflect101", "reflect101"),
        ("REFLECT101", "reflect101"),
        ("reflect_101", "reflect101"),
        ("default", "reflect101"),
        ("zeros", "constant"),
        ("wrap", "wrap"),
        ("replicate", "replicate"),
    ],
)
def test_check_border_canonical_names(given: str, canonical: str) -> None:
    assert check_border(given) == canonical


def test_check_border_errors() -> None:
    with pytest.raises(
        ValueError, match=r"border must be one of \[.*'reflect101'.*\]; got 'mirror'"
    ):
        check_border("mirror")
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        check_border("circular", argument="padding_mode")
    with pytest.raises(TypeError, match="border must be a string"):
        check_border(1)  # type: ignore[arg-type]


def test_pad2d_errors() -> None:
    x = torch.zeros(1, 1, 3, 3)
    with pytest.raises(ValueError, match="left must be an integer >= 0; got -1"):
        pad2d(x, -1, 0, 0, 0)
    with pytest.raises(ValueError, match=r"top must be an integer >= 0; got 1.5"):
        pad2d(x, 0, 0, 1.5, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="border must be one of"):
        pad2d(x, 1, 1, 1, 1, "mirror")
    with pytest.raises(ValueError, match="expected a tensor"):
        pad2d(torch.zeros(3), 1, 1, 1, 1)
    with pytest.raises(ValueError, match="cannot extend an empty axis"):
        pad2d(torch.zeros(1, 0, 3), 0, 0, 1, 1, "reflect")
