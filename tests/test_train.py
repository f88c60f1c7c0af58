"""train_model: the study's recipe, batch size, early stopping, best model, both data paths, resume."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from img2img.checkpoint import load_model, read_metadata
from img2img.data import FilteredDataset
from img2img.models import create_img2img_model
from img2img.train import TrainingDivergedError, train_model


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
        ("learning_rate", 0.0, "learning_rate must be a positive number"),
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
