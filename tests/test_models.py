"""The architecture registry: every registered architecture, automatically, plus each one's specifics."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from img2img_filters.models import (
    ContextAggregationNet,
    StructuredNet,
    create_img2img_model,
    list_archs,
    receptive_field,
)
from img2img_filters.models.can import can_dilations

ARCHS = [entry.name for entry in list_archs()]
CHANNELS = [(3, 1), (3, 3)]
#: Options for the generic tests: a clip range that :func:`_randomise`'s positive weights do
#: not reach, so that every output still moves with every parameter and every input pixel
#: (the clipping itself is tested in test_clipped_linear.py).
GENERIC_OPTIONS = {"clipped_linear": {"low": -1e3, "high": 1e3}}


def _generic(in_channels: int, out_channels: int, arch: str) -> nn.Module:
    return create_img2img_model(in_channels, out_channels, arch, **GENERIC_OPTIONS.get(arch, {}))


def _randomise(model: nn.Module) -> nn.Module:
    """Strictly positive parameters: every ReLU passes, so every path carries signal."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.rand(parameter.shape, generator=generator) * 0.1 + 0.05)
    return model


def _changed_outputs(
    model: nn.Module, in_channels: int, size: int, change: Callable[[torch.Tensor], None]
) -> torch.Tensor:
    """``(size, size)`` bool: the outputs that move when ``change`` edits a random image in place."""
    model = _randomise(model).double().eval()
    generator = torch.Generator().manual_seed(2)
    base = torch.rand(1, in_channels, size, size, dtype=torch.float64, generator=generator)
    changed = base.clone()
    change(changed)
    with torch.no_grad():
        return (model(changed) != model(base)).any(dim=1)[0]


def _measured_receptive_field(model: nn.Module, in_channels: int, claimed: int) -> tuple[int, int]:
    """Perturb the centre pixel of a large image; return the (rows, cols) extent of changed outputs."""
    size = 2 * claimed + 11
    centre = size // 2
    # Rounded outputs hide a change of less than half a level: the bump reaches the far taps.
    height = 1e5 if getattr(model, "quantised", False) else 1.0

    def bump(image: torch.Tensor) -> None:
        image[..., centre, centre] += height

    changed = _changed_outputs(model, in_channels, size, bump)
    rows = changed.any(dim=1).nonzero().flatten()
    cols = changed.any(dim=0).nonzero().flatten()
    # The change must be centred on the perturbed pixel.
    assert int(rows.min() + rows.max()) == 2 * centre
    assert int(cols.min() + cols.max()) == 2 * centre
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(("in_channels", "out_channels"), CHANNELS)
def test_forward_backward_shapes_and_gradients(
    arch: str, in_channels: int, out_channels: int
) -> None:
    model = _generic(in_channels, out_channels, arch)
    x = torch.rand(2, in_channels, 37, 53)
    out = model(x)
    assert out.shape == (2, out_channels, 37, 53)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, f"{arch}: {name} got no gradient"
        assert torch.isfinite(parameter.grad).all(), f"{arch}: {name} has a non-finite gradient"


@pytest.mark.parametrize("arch", ARCHS)
def test_every_parameter_is_used(arch: str) -> None:
    # With generic (positive) weights, every parameter must influence the output.
    model = _randomise(_generic(3, 3, arch))
    out = model(torch.rand(2, 3, 21, 19))
    (out * torch.randn_like(out)).sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, (
            f"{arch}: {name} is unused"
        )


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(("in_channels", "out_channels"), CHANNELS)
def test_receptive_field_is_exact(arch: str, in_channels: int, out_channels: int) -> None:
    model = _generic(in_channels, out_channels, arch)
    claimed = receptive_field(model)
    assert isinstance(claimed, int) and claimed % 2 == 1
    if arch == "equalisation":  # histograms: a pixel moves only the levels it passes
        assert _reads_beyond(model, in_channels, claimed)
        return
    measured = _measured_receptive_field(model, in_channels, claimed)
    if getattr(model, "whole_image", False):  # a recursive filter: the change reaches the edges
        assert measured == (2 * claimed + 11, 2 * claimed + 11)
    else:
        assert measured == (claimed, claimed)


def _reads_beyond(model: nn.Module, in_channels: int, claimed: int) -> bool:
    """Whether outputs outside the claimed window change when a pixel is set to the darkest."""
    size = 4 * claimed + 31
    centre = size // 2

    def darken(image: torch.Tensor) -> None:
        image[..., centre - 1 : centre + 2, centre - 1 : centre + 2] = 0.0

    moved = _changed_outputs(model, in_channels, size, darken)
    r = claimed // 2 + 1
    moved[centre - r : centre + r + 1, centre - r : centre + r + 1] = False
    return bool(moved.any())


@pytest.mark.parametrize("arch", ARCHS)
def test_declares_linearity_and_config(arch: str) -> None:
    model = create_img2img_model(3, 1, arch)
    assert isinstance(type(model).is_linear, bool)
    assert model.config["arch"] == arch
    assert model.config["options"] == {**next(e for e in list_archs() if e.name == arch).defaults}


@pytest.mark.parametrize("arch", ARCHS)
def test_unknown_option_is_rejected(arch: str) -> None:
    with pytest.raises(ValueError, match="unknown option 'no_such_option'"):
        create_img2img_model(3, 1, arch, no_such_option=1)


def test_study_has_48_parameters() -> None:
    model = create_img2img_model(3, 1, "study")
    assert sum(p.numel() for p in model.parameters()) == 48
    assert not model.is_linear


# -- can ---------------------------------------------------------------------------------------


def test_can_dilations_and_receptive_field() -> None:
    assert can_dilations(1) == [1]
    assert can_dilations(2) == [1, 1]
    assert can_dilations(5) == [1, 2, 4, 8, 1]
    assert can_dilations(7, dilation_cap=4) == [1, 2, 4, 4, 4, 4, 1]
    model = create_img2img_model(3, 1, "can")
    assert isinstance(model, ContextAggregationNet)
    assert model.receptive_field() == 33
    assert create_img2img_model(3, 1, "can", depth=7).receptive_field() == 129
    assert (
        create_img2img_model(3, 1, "can", depth=7, dilation_cap=4).receptive_field() == 1 + 2 * 20
    )


def test_can_starts_as_the_identity_without_noise() -> None:
    x = torch.rand(2, 3, 24, 31)
    with torch.no_grad():
        same = create_img2img_model(3, 3, "can", init_noise=0).eval()(x)
        mean = create_img2img_model(3, 1, "can", init_noise=0).eval()(x)
        noisy = create_img2img_model(3, 3, "can").eval()(x)
    torch.testing.assert_close(same, x, atol=1e-6, rtol=0)
    torch.testing.assert_close(mean, x.mean(dim=1, keepdim=True), atol=1e-6, rtol=0)
    deviation = (noisy - x).square().mean().sqrt()
    assert 0.01 < deviation < 1.0  # identity plus noise (see ContextAggregationNet)


def test_can_trains_in_batch_norm_mode() -> None:
    model = create_img2img_model(3, 1, "can", width=8, depth=3).train()
    out = model(torch.rand(1, 3, 9, 9))  # a single image still has batch statistics
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"width": 0}, ValueError),
        ({"depth": 0}, ValueError),
        ({"dilation_cap": 0}, ValueError),
        ({"width": 2.5}, TypeError),
        ({"border": "mirror"}, ValueError),
        ({"init_noise": -0.1}, ValueError),
        ({"init_noise": "big"}, TypeError),
    ],
)
def test_can_bad_options(options: dict, error: type[Exception]) -> None:
    with pytest.raises(error):
        create_img2img_model(3, 1, "can", **options)


# -- structured --------------------------------------------------------------------------------


def test_structured_shape_and_options() -> None:
    model = create_img2img_model(
        3, 1, "structured", kernel_size=5, features=4, squares=False, layers=0
    )
    assert isinstance(model, StructuredNet)
    assert model.receptive_field() == 5
    assert model(torch.rand(1, 3, 11, 13)).shape == (1, 1, 11, 13)
    assert sum(p.numel() for p in model.parameters()) == 3 * 4 * 25 + 4 + 4 + 1
    deep = create_img2img_model(3, 2, "structured", activation="gelu", layers=3)
    assert deep(torch.rand(1, 3, 8, 8)).shape == (1, 2, 8, 8)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"kernel_size": 4}, ValueError),
        ({"features": 0}, ValueError),
        ({"layers": -1}, ValueError),
        ({"activation": "swish2"}, ValueError),
        ({"squares": "yes"}, TypeError),
    ],
)
def test_structured_bad_options(options: dict, error: type[Exception]) -> None:
    with pytest.raises(error):
        create_img2img_model(3, 1, "structured", **options)


def test_structured_can_represent_a_gradient_magnitude() -> None:
    # sqrt(gx^2 + gy^2) is an MLP of [f, f^2]: check that the squares reach the MLP input.
    model = create_img2img_model(1, 1, "structured", features=2, layers=0)
    with torch.no_grad():
        model.features.weight.zero_()
        model.features.bias.zero_()
        model.features.weight[0, 0, 1] = torch.tensor([-1.0, 0.0, 1.0])
        model.features.weight[1, 0, :, 1] = torch.tensor([-1.0, 0.0, 1.0])
        out = model.mlp[-1]
        out.weight.zero_()
        out.bias.zero_()
        out.weight[0, 2:] = 1.0  # gx^2 + gy^2
    x = torch.zeros(1, 1, 5, 5)
    x[..., 2, 3] = 1.0
    with torch.no_grad():
        energy = model(x)
    assert float(energy[0, 0, 2, 2]) == pytest.approx(1.0)
