"""The fused chains of ``compile=True`` on the CPU: which networks qualify, and that they are exact."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from img2img_filters.backends.cpu.fused import (
    FlatLayout,
    FusedTrainer,
    fusable_chain,
    fused_loss,
    loss_arguments,
)
from img2img_filters.models import create_img2img_model
from img2img_filters.models.study import LinearNet, StudyNet


def _reference(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str):
    """Loss and parameter gradients of ``model`` itself, in float64."""
    exact = copy.deepcopy(model).double()
    reduce = F.l1_loss if loss == "l1" else F.mse_loss
    value = reduce(exact(x.double()), y.double())
    value.backward()
    return value.item(), [p.grad for p in exact.parameters()]


def _check(
    model: nn.Module, shape: tuple[int, ...], loss: str, compiled: bool = False, extra: int = 0
) -> None:
    """The fused loss of a ``shape`` batch (in a layout ``extra`` photos larger) is the model's."""
    torch.manual_seed(1)
    x = torch.rand(shape)
    y = torch.rand(shape[0], model(x).shape[1], *shape[2:])
    expected, grads = _reference(model, x, y, loss)
    layers = fusable_chain(model)
    assert layers is not None
    if compiled:
        trainer = FusedTrainer(layers, loss, fallback=None)
        value = trainer(x, y)
        assert trainer.failed is None
    else:
        layout, module = fused_loss(layers, (shape[0] + extra, *shape[1:]), loss)
        value = module(*loss_arguments(layout, x, y))
    model.zero_grad()
    value.backward()
    assert value.item() == pytest.approx(expected, rel=1e-5)
    for (name, parameter), exact in zip(model.named_parameters(), grads, strict=True):
        scale = max(exact.abs().max().item(), 1e-3)
        error = (parameter.grad.double() - exact).abs().max().item()
        assert error <= 1e-5 * scale, (name, error, scale)


def test_the_study_and_zero_border_stacks_are_fusable_chains() -> None:
    study = create_img2img_model(3, 1, "study")
    assert fusable_chain(study) == [study.conv1, study.relu1, study.conv2, study.relu2, study.conv3]
    linear = LinearNet(3, 1, kernel_size=5, depth=2, border="constant")
    assert fusable_chain(linear) == list(linear.layers)
    sequential = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.LeakyReLU(0.1), nn.Conv2d(2, 1, 1))
    assert fusable_chain(sequential) == list(sequential)


@pytest.mark.parametrize(
    "model",
    [
        LinearNet(3, 1, kernel_size=3, border="reflect101"),  # pads by reflection
        StudyNet(3, 1, border="replicate"),
        nn.Sequential(nn.Conv2d(3, 1, 3, padding=1), nn.Sigmoid()),  # sigmoid(0) != 0
        nn.Sequential(nn.Conv2d(3, 1, 3, padding=1, stride=2)),
        nn.Sequential(nn.Conv2d(3, 1, 3)),  # no padding: the output shrinks
        nn.Sequential(nn.Conv2d(3, 1, 3, padding=1, padding_mode="reflect")),
        nn.Sequential(nn.Conv2d(3, 8, 3, padding=1)),  # 24 channel pairs
        nn.Sequential(nn.Conv2d(3, 1, 4, padding="same")),  # even kernel
        nn.Sequential(nn.ReLU()),  # no convolution
        create_img2img_model(3, 1, "can"),  # no layer_chain
    ],
    ids=lambda model: type(model).__name__,
)
def test_other_networks_are_not_fusable(model: nn.Module) -> None:
    assert fusable_chain(model) is None


def test_a_subclass_with_its_own_forward_is_not_fusable() -> None:
    class Residual(StudyNet):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) + x[:, :1]

    class Doubled(nn.Conv2d):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(x)

    class Shifted(nn.ReLU):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) + 1

    class Plain(nn.Sequential):
        pass

    assert fusable_chain(StudyNet(3, 1, border="constant")) is not None
    assert fusable_chain(Residual(3, 1, border="constant")) is None
    conv, relu = nn.Conv2d(3, 1, 3, padding=1), nn.ReLU()
    assert fusable_chain(Plain(conv, relu)) == [conv, relu]  # Sequential's own forward
    assert fusable_chain(nn.Sequential(Doubled(3, 1, 3, padding=1))) is None
    assert fusable_chain(nn.Sequential(conv, Shifted())) is None


def _unpack(layout: FlatLayout, flat: torch.Tensor) -> torch.Tensor:
    """``(C, length)`` of ``layout`` (no margins) -> ``(B, C, H, W)``."""
    rows, columns = layout.padded
    (ph, pw) = layout.pad
    photos = flat.reshape(-1, layout.batch, rows, columns)
    return photos[:, :, ph : ph + layout.height, pw : pw + layout.width].transpose(0, 1)


def test_packing_puts_zeros_around_each_photo_and_unpacks_back() -> None:
    layout = FlatLayout(batch=2, height=3, width=4, pad=(1, 2), margin=5)
    images = torch.arange(1, 2 * 2 * 3 * 4 + 1, dtype=torch.float32).reshape(2, 2, 3, 4)
    flat = layout.pack(images, "inputs", layout.margin)
    assert flat.shape == (2, 5 + 2 * 5 * 8 + 5)
    photos = flat[:, 5:-5].reshape(2, 2, 5, 8)  # (C, B, H + 2, W + 4)
    assert torch.equal(photos[:, :, 1:4, 2:6], images.transpose(0, 1))
    assert photos.abs().sum() == images.abs().sum()  # zeros everywhere else
    assert torch.equal(_unpack(layout, flat[:, 5:-5]), images)
    mask = layout.mask(2)
    assert mask.sum() == 2 * 3 * 4 and torch.equal(mask[0] != 0, flat[0] != 0)
    again = layout.pack(images[:1] + 1, "inputs", layout.margin)  # one photo: the other zeroed
    assert again.data_ptr() == flat.data_ptr()  # the buffer is reused, its zeros kept
    assert torch.equal(_unpack(layout, again[:, 5:-5])[:1], images[:1] + 1)
    assert again.abs().sum() == (images[:1] + 1).abs().sum()
    assert torch.equal(layout.mask(1)[0] != 0, again[0] != 0)
    with pytest.raises(ValueError, match="holds 1 to 2 photos; got 3"):
        layout.pack(torch.zeros(3, 2, 3, 4), "inputs", layout.margin)


@pytest.mark.parametrize(
    ("build", "shape", "loss"),
    [
        (lambda: create_img2img_model(3, 1, "study"), (3, 3, 7, 10), "l1"),
        (lambda: LinearNet(3, 2, kernel_size=5, depth=2, border="constant"), (2, 3, 9, 6), "mse"),
        (
            lambda: nn.Sequential(
                nn.Conv2d(3, 2, (3, 5), padding=(1, 2)),
                nn.Tanh(),
                nn.Conv2d(2, 2, 3, padding=2, dilation=2, bias=False),
                nn.LeakyReLU(0.2),
                nn.Conv2d(2, 1, 1),
            ),
            (4, 3, 8, 11),
            "l1",
        ),
    ],
    ids=["study-l1", "linear-5x5-mse", "rectangular-dilated"],
)
def test_the_fused_loss_and_gradients_equal_the_networks(build, shape, loss) -> None:
    torch.manual_seed(0)
    _check(build(), shape, loss)


def test_a_smaller_batch_in_a_larger_layout_gives_its_own_loss() -> None:
    torch.manual_seed(0)
    _check(create_img2img_model(3, 1, "study"), (2, 3, 8, 9), "l1", extra=3)


def test_the_last_smaller_batch_reuses_the_compiled_loops(monkeypatch) -> None:
    compiled = []

    def eager_compile(module, **options):
        compiled.append(module)
        return module

    monkeypatch.setattr(torch, "compile", eager_compile)
    model = create_img2img_model(3, 1, "study")
    trainer = FusedTrainer(fusable_chain(model), "l1", fallback=None)
    x, y = torch.rand(5, 3, 8, 8), torch.rand(5, 1, 8, 8)
    for batch in (x[:4], x[4:]):  # 4, then the last 1
        count = len(batch)
        expected = F.l1_loss(model(batch), y[:count] if count == 4 else y[4:])
        got = trainer(batch, y[:count] if count == 4 else y[4:])
        assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    assert len(compiled) == 1
    trainer(torch.rand(6, 3, 8, 8), torch.rand(6, 1, 8, 8))  # a larger batch: a new layout
    trainer(torch.rand(2, 3, 10, 8), torch.rand(2, 1, 10, 8))  # another photo size: too
    assert len(compiled) == 3


def test_the_compiled_chain_equals_the_network() -> None:
    torch.manual_seed(0)
    _check(create_img2img_model(3, 1, "study"), (4, 3, 16, 16), "l1", compiled=True)


def test_a_compiler_failure_warns_once_and_trains_uncompiled(monkeypatch, notices, caplog) -> None:
    calls = []

    def broken_compile(module, **options):
        def step(*args):
            raise RuntimeError("no C++ compiler\nmore details")

        return step

    monkeypatch.setattr(torch, "compile", broken_compile)
    model = create_img2img_model(3, 1, "study")

    def eager(x, y):
        calls.append(x.shape)
        return F.l1_loss(model(x), y)

    trainer = FusedTrainer(fusable_chain(model), "l1", eager)
    x, y = torch.rand(2, 3, 8, 8), torch.rand(2, 1, 8, 8)
    with notices("could not compile .*no C\\+\\+ compiler"):
        first = trainer(x, y)
    assert trainer.failed == "RuntimeError: no C++ compiler"
    assert first.item() == pytest.approx(F.l1_loss(model(x), y).item())
    caplog.clear()
    trainer(x, y)
    assert not caplog.records  # no second warning
    assert len(calls) == 2


def test_an_error_after_the_first_call_is_not_taken_for_a_compiler_failure(monkeypatch) -> None:
    def flaky_compile(module, **options):
        count = []

        def step(*args):
            count.append(1)
            if len(count) > 1:
                raise ValueError("bad batch")
            return module(*args)

        return step

    monkeypatch.setattr(torch, "compile", flaky_compile)
    model = create_img2img_model(3, 1, "study")
    trainer = FusedTrainer(fusable_chain(model), "l1", fallback=None)
    x, y = torch.rand(2, 3, 8, 8), torch.rand(2, 1, 8, 8)
    assert trainer(x, y).item() == pytest.approx(F.l1_loss(model(x), y).item(), rel=1e-6)
    with pytest.raises(ValueError, match="bad batch"):
        trainer(x, y)
    assert trainer.failed is None
