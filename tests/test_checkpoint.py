"""Checkpoints: round trips, the study's state dict, refusing pickled code and tampered files."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from img2img_filters.checkpoint import CheckpointError, load_model, read_metadata, save_model
from img2img_filters.models import create_img2img_model, list_archs


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".pth"])
@pytest.mark.parametrize("arch", [entry.name for entry in list_archs()])
def test_round_trip_every_architecture(tmp_path: Path, arch: str, suffix: str) -> None:
    model = create_img2img_model(3, 1, arch)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.01)
    path = save_model(
        model, tmp_path / f"model{suffix}", filter="study-sobel", metrics={"psnr": 40.0}
    )
    loaded = load_model(path)
    assert loaded.config == model.config
    assert loaded.metadata["filter"] == "study-sobel"
    assert loaded.metadata["metrics"] == {"psnr": 40.0}
    assert not loaded.training
    x = torch.rand(2, 3, 19, 23)
    model.eval()
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_the_studys_bare_state_dict_loads_as_the_studys_network(tmp_path: Path) -> None:
    # What the study's code saved: torch.save(model.state_dict(), "Sobel_img2img_model.pth").
    reference = create_img2img_model(3, 1, "study")
    path = tmp_path / "Sobel_img2img_model.pth"
    torch.save(reference.state_dict(), path)
    loaded = load_model(path)
    assert loaded.config["arch"] == "study"
    assert sum(p.numel() for p in loaded.parameters()) == 48
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(loaded(x), reference.eval()(x), rtol=0, atol=0)


def test_a_pickle_that_runs_code_is_refused_and_the_code_does_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    script = textwrap.dedent(
        f"""
        import os, torch

        class Payload:
            def __reduce__(self):
                return (os.system, ("touch {marker}",))

        torch.save({{"conv1.weight": Payload()}}, {str(tmp_path / "evil.pt")!r})
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused"):
        load_model(tmp_path / "evil.pt")
    assert not marker.exists(), "loading the checkpoint ran the pickled code"


def test_truncated_safetensors_is_refused(tmp_path: Path) -> None:
    path = save_model(create_img2img_model(3, 1, "linear"), tmp_path / "m.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        load_model(path)


def _tamper(path: Path, tensors=None, metadata=None) -> None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata()
    state = load_file(str(path))
    record = json.loads(header["img2img"])
    state = tensors(state) if tensors else state
    record = metadata(record) if metadata else record
    save_file(state, str(path), metadata={"img2img": json.dumps(record)})


def test_tampered_shapes_missing_keys_and_foreign_metadata_are_named(tmp_path: Path) -> None:
    path = save_model(
        create_img2img_model(3, 1, "linear", kernel_size=5), tmp_path / "m.safetensors"
    )

    _tamper(path, tensors=lambda s: {**s, "layers.0.weight": torch.zeros(1, 3, 3, 3)})
    with pytest.raises(CheckpointError, match=r"'layers.0.weight' has shape \(1, 3, 3, 3\)"):
        load_model(path)

    path = save_model(create_img2img_model(3, 1, "linear"), tmp_path / "m2.safetensors")
    _tamper(path, tensors=lambda s: {k: v for k, v in s.items() if k != "layers.0.bias"})
    with pytest.raises(CheckpointError, match=r"missing keys \['layers.0.bias'\]"):
        load_model(path)

    path = save_model(create_img2img_model(3, 1, "linear"), tmp_path / "m3.safetensors")
    _tamper(path, metadata=lambda r: {**r, "arch": "study", "options": {}})
    with pytest.raises(CheckpointError, match="does not match architecture 'study'"):
        load_model(path)

    path = save_model(create_img2img_model(3, 1, "linear"), tmp_path / "m4.safetensors")
    _tamper(path, metadata=lambda r: {**r, "arch": "transformer"})
    with pytest.raises(CheckpointError, match="arch must be one of"):
        load_model(path)


def test_files_that_are_not_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_model(tmp_path / "missing.safetensors")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_model(empty)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable PyTorch file"):
        load_model(text)
    other = tmp_path / "other.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(CheckpointError, match="not the study's state dict"):
        load_model(other)
    with pytest.raises(CheckpointError, match=r"expected a \.safetensors"):
        wrong = tmp_path / "model.onnx"
        wrong.write_bytes(b"x")
        load_model(wrong)
    with pytest.raises(ValueError, match="path must end in"):
        save_model(create_img2img_model(3, 1), tmp_path / "model.h5")


def test_a_process_killed_while_saving_leaves_the_previous_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_model(create_img2img_model(3, 1, "can"), path, generation=0)
    script = textwrap.dedent(
        f"""
        import os, signal
        import safetensors.torch as st
        from img2img_filters.checkpoint import save_model
        from img2img_filters.models import create_img2img_model

        original = st.save_file
        def save_then_die(tensors, filename, metadata=None):
            original(tensors, filename, metadata=metadata)
            with open(filename, "r+b") as f:
                f.truncate(100)  # a half-written file under the temporary name
            os.kill(os.getpid(), signal.SIGKILL)
        st.save_file = save_then_die
        save_model(create_img2img_model(3, 1, "can"), {str(path)!r}, generation=1)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], check=False)
    assert result.returncode == -9
    assert read_metadata(path)["generation"] == 0
    load_model(path)  # still a complete, loadable checkpoint


def test_a_run_folder_loads_as_on_the_command_line(tmp_path: Path) -> None:
    model = create_img2img_model(3, 1, "linear", kernel_size=3)
    save_model(model, tmp_path / "run" / "model.safetensors", filter="study-sobel")
    from_folder = load_model(tmp_path / "run")
    from_file = load_model(tmp_path / "run" / "model.safetensors")
    assert from_folder.metadata == from_file.metadata
    assert from_folder.metadata["filter"] == "study-sobel"
    for name, tensor in model.state_dict().items():
        assert torch.equal(from_folder.state_dict()[name], tensor), name
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"run folder '.*empty' has no model\.safetensors"):
        load_model(tmp_path / "empty")
