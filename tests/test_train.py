"""train_model: the study's recipe, batch size, early stopping, best model, both data paths, resume.

Also the pieces that make it fast (OpenCV convolutions, worker processes, memory maps,
streamed crops) and the sharing of batches between processes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from img2img_filters.backends.cpu import (
    is_tiny_conv,
    only_tiny_convs,
    tiny_conv2d,
    tiny_conv_mode,
    torch_threads,
)
from img2img_filters.checkpoint import load_model, read_metadata
from img2img_filters.data import FilteredDataset, FolderCrops, folder_crops, to_float
from img2img_filters.models import create_img2img_model
from img2img_filters.train import TrainingDivergedError, train_model


@pytest.fixture()
def datasets(mini_photos: np.ndarray) -> tuple[FilteredDataset, FilteredDataset]:
    images = np.ascontiguousarray(mini_photos.transpose(0, 3, 1, 2))
    train = FilteredDataset(images, "study-sobel", indices=np.arange(12))
    val = FilteredDataset(images, "study-sobel", indices=np.arange(12, 16))
    return train, val


class PairList(Dataset):
    """A plain Dataset of (input, target) pairs, as the study used."""

    def __init__(self, dataset: FilteredDataset) -> None:
        self.items = [dataset[i] for i in range(len(dataset))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        return self.items[index]


def test_training_lowers_the_loss(train_photos: np.ndarray) -> None:
    train = FilteredDataset(train_photos, "study-sobel", indices=np.arange(80))
    val = FilteredDataset(train_photos, "study-sobel", indices=np.arange(80, 96))
    model = create_img2img_model(3, 1, "linear", kernel_size=5)
    train_losses, val_losses = train_model(
        model, train, val, max_epochs=8, batch_size=8, learning_rate=0.003, progress=False
    )
    assert len(train_losses) == len(val_losses) == 8
    assert val_losses[-1] < 0.7 * val_losses[0]
    assert train_losses[-1] < 0.7 * train_losses[0]


def test_batch_size_is_honoured(datasets) -> None:
    train, val = datasets
    model = create_img2img_model(3, 1, "study")
    seen: list[int] = []
    model.register_forward_pre_hook(
        lambda module, inputs: seen.append(inputs[0].shape[0]) if module.training else None
    )
    train_model(model, train, val, max_epochs=2, batch_size=5, progress=False)
    assert seen == [5, 5, 2, 5, 5, 2]


class Frozen(nn.Module):
    """A model whose output cannot change: its only trainable parameter is multiplied by zero."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = create_img2img_model(3, 1, "study").requires_grad_(False)
        self.config = self.inner.config
        self.unused = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) + 0.0 * self.unused


def test_early_stopping_stops_when_validation_does_not_improve(datasets) -> None:
    train, val = datasets
    model = Frozen()
    _, val_losses = train_model(
        model, train, val, max_epochs=50, early_stopping_patience=3, progress=False
    )
    assert len(val_losses) == 4  # the first epoch, then three without improvement
    assert len(set(val_losses)) == 1
    assert model.training_summary["stopped"].startswith("early stopping")


def test_save_best_writes_the_best_epoch_and_it_reloads(datasets, tmp_path) -> None:
    train, val = datasets
    model = create_img2img_model(3, 1, "study")
    path = tmp_path / "best.safetensors"
    _, val_losses = train_model(
        model,
        train,
        val,
        max_epochs=5,
        batch_size=4,
        learning_rate=0.01,
        save_best=True,
        save_path=path,
        progress=False,
        metadata={"filter": "study-sobel"},
    )
    metadata = read_metadata(path)
    assert metadata["val_loss"] == pytest.approx(min(val_losses))
    assert metadata["epoch"] == int(np.argmin(val_losses)) + 1
    assert metadata["filter"] == "study-sobel"
    reloaded = load_model(path)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[key], value, rtol=0, atol=0)


def test_batched_and_dataloader_paths_give_the_same_losses(datasets) -> None:
    train, val = datasets
    results = []
    for train_set, val_set in ((train, val), (PairList(train), PairList(val))):
        torch.manual_seed(3)
        model = create_img2img_model(3, 1, "study")
        results.append(
            train_model(
                model, train_set, val_set, max_epochs=3, batch_size=4, seed=7, progress=False
            )
        )
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-6)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-6)


class ExplodesAt(nn.Module):
    """A linear model whose output becomes NaN from a given training step on."""

    def __init__(self, step: int) -> None:
        super().__init__()
        self.inner = create_img2img_model(3, 1, "linear", kernel_size=3)
        self.config = self.inner.config
        self.step, self.calls = step, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.calls += 1
        out = self.inner(x)
        return out * math.nan if self.training and self.calls >= self.step else out


def test_nan_loss_stops_with_epoch_and_step_and_keeps_the_last_good_state(
    datasets, tmp_path
) -> None:
    train, val = datasets
    model = ExplodesAt(step=5)  # 3 steps per epoch: epoch 2, step 2
    state = tmp_path / "state.pt"
    with pytest.raises(TrainingDivergedError, match=r"epoch 2, step 2"):
        train_model(
            model, train, val, max_epochs=5, batch_size=4, state_path=str(state), progress=False
        )
    saved = torch.load(state, weights_only=True)
    assert '"epoch": 1' in saved["progress"]
    assert all(torch.isfinite(v).all() for v in saved["model"].values())


class InterruptAt:
    """Wraps a dataset; raises KeyboardInterrupt at the n-th training batch (a Ctrl-C mid-epoch)."""

    def __init__(self, dataset: FilteredDataset, call: int) -> None:
        self.dataset, self.call, self.calls = dataset, call, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self.dataset[index]

    def batch(self, positions, device=None):
        self.calls += 1
        if self.calls == self.call:
            raise KeyboardInterrupt
        return self.dataset.batch(positions, device)


def test_resume_after_an_interruption_gives_identical_weights(datasets, tmp_path) -> None:
    train, val = datasets
    options = dict(max_epochs=5, batch_size=4, learning_rate=0.01, seed=1, progress=False)
    torch.manual_seed(0)
    reference = create_img2img_model(3, 1, "study")
    reference_losses = train_model(reference, train, val, **options)

    state = tmp_path / "state.pt"
    torch.manual_seed(0)
    interrupted = create_img2img_model(3, 1, "study")
    with pytest.raises(KeyboardInterrupt):
        train_model(interrupted, InterruptAt(train, call=8), val, state_path=str(state), **options)
    torch.manual_seed(123)  # a different initialisation: resume must overwrite it
    resumed = create_img2img_model(3, 1, "study")
    losses = train_model(resumed, train, val, state_path=str(state), resume=str(state), **options)
    assert losses == reference_losses
    for key, value in reference.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key


def test_resume_refuses_another_architecture(datasets, tmp_path) -> None:
    train, val = datasets
    state = tmp_path / "state.pt"
    train_model(
        create_img2img_model(3, 1, "study"),
        train,
        val,
        max_epochs=1,
        state_path=str(state),
        progress=False,
    )
    with pytest.raises(ValueError, match="arch differs"):
        train_model(
            create_img2img_model(3, 1, "linear"),
            train,
            val,
            max_epochs=2,
            resume=str(state),
            progress=False,
        )


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("batch_size", 0, "batch_size must be a positive integer"),
        ("max_epochs", -1, "max_epochs must be a positive integer"),
        ("learning_rate", 0.0, "learning_rate must be a positive, finite number"),
        ("learning_rate", float("inf"), "learning_rate must be a positive, finite number"),
        ("loss", "huber", "loss must be one of"),
        ("device", "tpu", "device must be"),
    ],
)
def test_bad_arguments_are_named(datasets, option, value, message) -> None:
    train, val = datasets
    with pytest.raises(ValueError, match=message):
        train_model(create_img2img_model(3, 1), train, val, progress=False, **{option: value})


def test_unknown_option_and_mismatched_channels(datasets) -> None:
    train, val = datasets
    with pytest.raises(TypeError, match="unknown option 'epochs'"):
        train_model(create_img2img_model(3, 1), train, val, epochs=3)
    with pytest.raises(ValueError, match="maps 3 -> 3 channels"):
        train_model(create_img2img_model(3, 3), train, val, max_epochs=1, progress=False)
    with pytest.raises(ValueError, match="save_path is required"):
        train_model(create_img2img_model(3, 1), train, val, save_best=True)


# -- the OpenCV path for few-channel convolutions -------------------------------------------------


@pytest.mark.parametrize(
    ("in_channels", "out_channels", "kernel", "padding", "dilation", "size"),
    [
        (3, 1, 3, 1, 1, (13, 11)),  # the study's first layer
        (1, 1, 3, 1, 1, (64, 64)),
        (3, 3, 3, 1, 1, (8, 9)),
        (2, 1, 5, 0, 1, (13, 11)),  # "valid", as after a reflect pad
        (1, 2, 3, 2, 2, (13, 11)),  # dilated
        (2, 2, 3, (1, 0), 1, (7, 6)),
        (1, 1, 3, 1, 1, (2, 3)),  # smaller than the kernel
    ],
)
def test_tiny_convolutions_match_pytorch(
    in_channels, out_channels, kernel, padding, dilation, size
) -> None:
    torch.manual_seed(1)
    for batch in (1, 37):  # 37: more than one block of photos, and a partial one
        x = torch.rand(batch, in_channels, *size, requires_grad=True)
        w = torch.randn(out_channels, in_channels, kernel, kernel, requires_grad=True)
        b = torch.randn(out_channels, requires_grad=True)
        with tiny_conv_mode():
            out = F.conv2d(x, w, b, padding=padding, dilation=dilation)
        assert out.grad_fn is not None and "TinyConv" in out.grad_fn.name()
        expected = F.conv2d(x.double(), w.double(), b.double(), padding=padding, dilation=dilation)
        torch.testing.assert_close(out.double(), expected, rtol=0, atol=1e-5)
        grad = torch.randn_like(out)
        ours = torch.autograd.grad(out, (x, w, b), grad)
        reference = torch.autograd.grad(expected, (x, w, b), grad.double())
        for got, want in zip(ours, reference, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_tiny_convolutions_equal_opencv_per_photo_and_leave_others_alone() -> None:
    import cv2

    x, w, b = torch.rand(20, 1, 16, 12), torch.randn(1, 1, 3, 3), torch.randn(1)
    out = tiny_conv2d(x, w, b, padding=1)
    for i in range(20):  # bit for bit: each photo as cv2.filter2D computes it alone
        expected = cv2.filter2D(
            x[i, 0].numpy(), -1, w[0, 0].numpy(), delta=float(b), borderType=cv2.BORDER_CONSTANT
        )
        np.testing.assert_array_equal(out[i, 0].numpy(), expected)
    wide = torch.randn(24, 24, 3, 3)
    assert not is_tiny_conv(torch.rand(2, 24, 8, 8), wide, None, 1, 1, 1, 1)
    assert not is_tiny_conv(x.double(), w.double(), None, 1, 1, 1, 1)
    assert not is_tiny_conv(x, w, None, 2, 1, 1, 1)  # strided
    assert not is_tiny_conv(x, w, None, 1, "same", 1, 1)
    with tiny_conv_mode():
        strided = F.conv2d(x, w, stride=2)  # not eligible: PyTorch's own
    torch.testing.assert_close(strided, F.conv2d(x, w, stride=2))
    with pytest.raises(ValueError, match="tiny_conv2d: expected"):
        tiny_conv2d(x, wide[:, :1])


@pytest.mark.parametrize(
    ("arch", "options", "tiny"),
    [
        ("study", {}, True),
        ("linear", {"kernel_size": 5, "depth": 2}, True),
        ("can", {"width": 8, "depth": 3}, False),  # 8 x 8 channel pairs
        ("structured", {}, False),  # a wide 1x1 MLP
    ],
)
def test_networks_of_tiny_convolutions_train_on_one_pytorch_thread(
    datasets, arch, options, tiny
) -> None:
    train, val = datasets
    model = create_img2img_model(3, 1, arch, **options)
    assert only_tiny_convs(model) is tiny
    seen: list[int] = []
    model.register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    with torch_threads(2):
        train_model(model, train, val, max_epochs=1, batch_size=4, progress=False, device="cpu")
        assert seen and set(seen) == ({1} if tiny else {2})
        assert torch.get_num_threads() == 2  # restored


def test_training_with_opencv_convolutions_matches_pytorchs(datasets, monkeypatch) -> None:
    import img2img_filters.backends.cpu.limits as cpuconv

    train, val = datasets
    results = []
    for pairs in (cpuconv.MAX_CHANNEL_PAIRS, 0):  # 0: every convolution is PyTorch's
        monkeypatch.setattr(cpuconv, "MAX_CHANNEL_PAIRS", pairs)
        torch.manual_seed(4)
        model = create_img2img_model(3, 1, "study")
        losses = train_model(model, train, val, max_epochs=3, batch_size=4, seed=2, progress=False)
        results.append((losses, model.state_dict()))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-4)
    for key, value in results[0][1].items():
        torch.testing.assert_close(value, results[1][1][key], rtol=1e-3, atol=1e-5)


# -- data paths ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cores", "local", "spare"),
    [
        (2, None, True),  # one process on two cores: a core for the batch thread
        (2, "2", False),  # torchrun --nproc_per_node=2 on two cores: none
        (4, "2", True),
        (1, None, False),
        (2, "two", True),  # not a number: taken as one process
    ],
)
def test_a_batch_thread_only_with_a_core_to_spare(monkeypatch, cores, local, spare) -> None:
    import img2img_filters.train.batches as batches

    cpus = set(range(cores))
    monkeypatch.setattr(batches.os, "sched_getaffinity", lambda _pid: cpus, raising=False)
    if local is None:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local)
    assert batches.spare_core() is spare


def test_batches_are_made_where_a_core_is_free_with_the_same_training(
    datasets, monkeypatch
) -> None:
    import threading

    import img2img_filters.train.batches as batches

    train, val = datasets
    makers: set[str] = set()
    gather = FilteredDataset.uint8

    def spied(self, positions):
        makers.add(threading.current_thread().name)
        return gather(self, positions)

    monkeypatch.setattr(FilteredDataset, "uint8", spied)
    results = []
    for spare in (True, False):
        makers.clear()
        monkeypatch.setattr(batches, "spare_core", lambda spare=spare: spare)
        torch.manual_seed(3)
        model = create_img2img_model(3, 1, "study")
        losses = train_model(model, train, val, max_epochs=2, batch_size=4, seed=1, progress=False)
        # validation batches are always made inline; training batches in the thread if spare
        assert ("img2img-batches" in makers) is spare
        results.append((losses, model.state_dict()))
    assert results[0][0] == results[1][0]
    for key, value in results[0][1].items():
        assert torch.equal(value, results[1][1][key]), key


@pytest.mark.timeout(180)
@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_worker_processes_give_the_same_training(datasets, start) -> None:
    import cv2

    train, val = datasets
    # OpenCV's thread pool has run and sleeps: a forked worker that touched it would hang.
    cv2.GaussianBlur(np.zeros((1500, 1500), np.float32), (5, 5), 0)
    results = []
    for workers in (0, 1):
        torch.manual_seed(3)
        model = create_img2img_model(3, 1, "study")
        losses = train_model(
            model,
            train,
            val,
            max_epochs=2,
            batch_size=4,
            seed=7,
            progress=False,
            num_workers=workers,
            worker_start=start,
        )
        results.append((losses, model.state_dict()))
    assert results[0][0] == results[1][0]
    for key, value in results[0][1].items():
        assert torch.equal(value, results[1][1][key]), key


def test_memory_mapped_photos_stay_mapped_and_pickle_as_a_file(tmp_path) -> None:
    import pickle

    path = tmp_path / "photos.npy"
    np.save(path, np.random.default_rng(0).integers(0, 256, (40, 3, 16, 16), dtype=np.uint8))
    mapped = np.load(path, mmap_mode="r")
    dataset = FilteredDataset(mapped, "study-sobel", indices=np.arange(30))
    assert isinstance(dataset.images, np.memmap)
    copy = pickle.loads(pickle.dumps(dataset))  # what a spawned worker receives
    assert isinstance(copy.images, np.memmap) and len(pickle.dumps(dataset)) < 4096
    for ours, theirs in zip(dataset.batch([3, 29]), copy.batch([3, 29]), strict=True):
        assert torch.equal(ours, theirs)


def test_to_float_is_the_exact_division() -> None:
    photos = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16).repeat(3, axis=1)
    expected = torch.from_numpy(photos).float() / 255.0
    assert torch.equal(to_float(photos), expected)
    assert torch.equal(to_float(torch.from_numpy(photos)), expected)


def test_folder_crops_stream_new_crops_each_epoch_and_train(tmp_path, notices) -> None:
    from PIL import Image
    from skimage import data

    folder = tmp_path / "photos"
    folder.mkdir()
    photo = data.astronaut()
    for index, (height, width) in enumerate([(80, 96), (120, 70), (64, 64), (200, 150)] * 3):
        Image.fromarray(photo[index * 9 : index * 9 + height, :width]).save(folder / f"{index}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    train, val = folder_crops(folder, "study-sobel", crop_size=32, crops_per_image=2, seed=4)
    assert len(train) + len(val) == 2 * 13 and train.image_size == (32, 32)
    with notices("broken.png") as record:
        everything = FolderCrops(sorted(folder.iterdir()), "study-sobel", crop_size=32)
        first = everything.uint8(np.arange(len(everything)))
        everything.uint8(np.arange(len(everything)))  # reported once, not twice
    assert len(record) == 1
    assert first.shape == (13, 3, 32, 32)
    train.set_epoch(1)
    one = train.uint8(np.arange(len(train)))
    train.set_epoch(2)
    two = train.uint8(np.arange(len(train)))
    train.set_epoch(1)
    assert np.array_equal(one, train.uint8(np.arange(len(train))))  # (seed, epoch) decide
    assert not np.array_equal(one, two)
    val.set_epoch(5)
    fixed = val.uint8(np.arange(len(val)))
    val.set_epoch(6)
    assert np.array_equal(fixed, val.uint8(np.arange(len(val))))
    model = create_img2img_model(3, 1, "study")
    train_losses, val_losses = train_model(
        model, train, val, max_epochs=2, batch_size=8, progress=False
    )
    assert len(train_losses) == 2 and all(math.isfinite(v) for v in val_losses)


# -- resume, budgets, options ----------------------------------------------------------------------


def test_resume_names_what_differs(datasets, tmp_path) -> None:
    _, val = datasets
    photos = val.images
    train = FilteredDataset(photos, "study-sobel", indices=np.arange(12), source="photos")
    state = tmp_path / "state.pt"
    options = dict(max_epochs=2, progress=False)
    train_model(
        create_img2img_model(3, 1, "study"),
        train,
        val,
        state_path=str(state),
        **options,
        metadata={"data": "photos"},
    )
    fresh = lambda: create_img2img_model(3, 1, "study")  # noqa: E731
    with pytest.raises(ValueError, match=r"resume: arch differs .*'study' there, 'linear' now"):
        train_model(create_img2img_model(3, 1, "linear"), train, val, resume=str(state), **options)
    with pytest.raises(ValueError, match=r"resume: filter differs .*there, 'sobel:dx=1,dy=0"):
        train_model(fresh(), train.with_filter("sobel"), val, resume=str(state), **options)
    other = FilteredDataset(photos, "study-sobel", indices=np.arange(12), source="elsewhere")
    with pytest.raises(ValueError, match=r"resume: data differs .*'photos' there, 'elsewhere' now"):
        train_model(fresh(), other, val, resume=str(state), **options)
    smaller = FilteredDataset(photos, "study-sobel", indices=np.arange(10), source="photos")
    with pytest.raises(
        ValueError, match=r"resume: training data size differs .*\(12 there, 10 now\)"
    ):
        train_model(fresh(), smaller, val, resume=str(state), **options)
    with pytest.raises(ValueError, match=r"resume: data differs .*'photos' there, 'web' now"):
        train_model(fresh(), train, val, resume=str(state), metadata={"data": "web"}, **options)
    with pytest.raises(ValueError, match="resume: batch_size differs"):
        train_model(fresh(), train, val, resume=str(state), batch_size=3, **options)
    train_model(fresh(), train, val, resume=str(state), **options)  # the same: accepted
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(ValueError, match="not a readable training state"):
        train_model(fresh(), train, val, resume=str(state), **options)
    with pytest.raises(FileNotFoundError, match="no training state"):
        train_model(fresh(), train, val, resume=str(tmp_path / "absent.pt"), **options)


def test_time_budget_stops_training(datasets) -> None:
    train, val = datasets
    model = create_img2img_model(3, 1, "study")
    train_losses, _ = train_model(
        model, train, val, max_epochs=50, batch_size=2, time_budget=1e-9, progress=False
    )
    assert len(train_losses) == 1
    assert model.training_summary["stopped"].startswith("time budget")


def test_compile_and_cuda_options_reach_the_model(datasets, monkeypatch, notices) -> None:
    train, val = datasets
    compiled = []

    def fake_compile(module, *args, **kwargs):
        compiled.append(module)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    # not a chain of zero-padded convolutions (it reflects at the border): compiled whole
    model = create_img2img_model(3, 1, "linear", kernel_size=3)
    with notices("CUDA only"):
        train_model(
            model,
            train,
            val,
            max_epochs=1,
            progress=False,
            compile=True,
            amp="bf16",
            channels_last=True,
        )
    assert compiled == [model]
    assert model.layers[0].weight.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="worker_start must be one of"):
        train_model(model, train, val, worker_start="thread")
    with pytest.raises(ValueError, match="time_budget must be a positive number"):
        train_model(model, train, val, time_budget=0)


def _record_batch_threads(train: Dataset, monkeypatch) -> list[bool]:
    """Whether each of ``train``'s epochs is allowed a batch thread, as train_model asks."""
    import img2img_filters.train.loop as loop

    asked = []
    iterate = loop.iterate_batches

    def spy(dataset, *args, **kwargs):
        if dataset is train:
            asked.append(kwargs.get("background", True))
        return iterate(dataset, *args, **kwargs)

    monkeypatch.setattr(loop, "iterate_batches", spy)
    return asked


def test_compile_on_the_cpu_trains_the_study_network_as_fused_loops(datasets, monkeypatch) -> None:
    train, val = datasets
    backgrounds = _record_batch_threads(train, monkeypatch)
    results = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        model = create_img2img_model(3, 1, "study")
        # batches of 5, 5 and 2: the last reuses the loops compiled for the first
        losses = train_model(
            model, train, val, max_epochs=2, batch_size=5, progress=False, compile=compiled
        )
        results[compiled] = (losses, model.state_dict())
    assert backgrounds == [True, True, False, False]  # fused loops: batches made inline
    (eager_train, eager_val), eager_weights = results[False]
    (fused_train, fused_val), fused_weights = results[True]
    assert fused_train == pytest.approx(eager_train, rel=1e-4)
    assert fused_val == pytest.approx(eager_val, rel=1e-4)
    for name, value in eager_weights.items():
        assert torch.allclose(fused_weights[name], value, rtol=1e-4, atol=1e-6), name


def test_compile_without_a_compiler_warns_and_trains_uncompiled(
    datasets, monkeypatch, notices
) -> None:
    train, val = datasets
    backgrounds = _record_batch_threads(train, monkeypatch)

    def no_compiler(module, **options):
        def step(*args):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")

        return step

    torch.manual_seed(0)
    expected = train_model(
        create_img2img_model(3, 1, "study"), train, val, max_epochs=2, progress=False
    )
    backgrounds.clear()
    monkeypatch.setattr(torch, "compile", no_compiler)
    torch.manual_seed(0)
    with notices(r"could not compile .*No working C\+\+ compiler"):
        losses = train_model(
            create_img2img_model(3, 1, "study"),
            train,
            val,
            max_epochs=2,
            progress=False,
            compile=True,
        )
    assert backgrounds == [False, True]  # the batch thread is back once compiling failed
    assert losses[0] == pytest.approx(expected[0], rel=1e-5)
    assert losses[1] == pytest.approx(expected[1], rel=1e-5)


def test_the_batches_of_an_epoch_are_shared_out_between_processes(monkeypatch) -> None:
    import img2img_filters.train.batches as training

    seen = []
    for rank in range(3):
        monkeypatch.setattr(training, "process_group", lambda rank=rank: (rank, 3))
        steps = training.plan_epoch(23, 8, seed=0, epoch=1, shuffle=True)
        assert len(steps) == 3  # the same number of steps on every process
        seen.append(steps)
    for step in range(3):
        shares = [seen[rank][step] for rank in range(3)]
        counted = np.concatenate([s.positions for s in shares if s.count])
        batch = 8 if step < 2 else 7
        assert sorted(counted.tolist()) == sorted(set(counted.tolist())) and len(counted) == batch
        # averaging the processes' scaled means gives the mean over the whole batch
        assert sum(s.scale * s.count / max(s.count, 1) for s in shares) == pytest.approx(3.0)
    monkeypatch.setattr(training, "process_group", lambda: (2, 3))
    last = training.plan_epoch(7, 3, 0, 1, True)[-1]  # 1 item for 3 processes: rank 2 has none
    assert last.count == 0 and last.scale == 0.0 and len(last.positions) == 1


def test_the_fused_l1_loss_equals_pytorchs() -> None:
    from img2img_filters.train import LOSSES

    outputs = torch.randn(6, 1, 9, 7, requires_grad=True)
    targets = torch.randn(6, 1, 9, 7)
    targets[0, 0, 0, 0] = outputs[0, 0, 0, 0].detach()  # a zero difference: gradient 0
    ours = LOSSES["l1"](outputs, targets)
    (grad,) = torch.autograd.grad(ours * 3.0, outputs)
    expected = F.l1_loss(outputs, targets)
    (expected_grad,) = torch.autograd.grad(expected * 3.0, outputs)
    assert ours.item() == expected.item()
    assert torch.equal(grad, expected_grad) and grad[0, 0, 0, 0] == 0
