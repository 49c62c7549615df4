"""Checkpoint loading: weights_only round-trips, corrupt files, refused pickles, super-gradients layouts."""

from __future__ import annotations

import builtins
import hashlib
import pickle
from pathlib import Path

import pytest
import torch

from stream.errors import ModelError, UnsafeCheckpointError, WeightsError
from stream.models.checkpoint import load_state_dict, sha256_file


def _small_state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2))
    return model.state_dict()


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


class _CreatesFile:
    """Unpickling this calls open(marker, "w"), which creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (builtins.open, (str(self.marker), "w"))


def test_state_dict_round_trips(tmp_path: Path) -> None:
    sd = _small_state_dict()
    path = tmp_path / "m.pth"
    torch.save(sd, path)
    _assert_same(load_state_dict(path), sd)


def test_truncated_file_is_a_model_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "m.pth"
    torch.save(_small_state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError) as info:
        load_state_dict(path)
    assert not isinstance(info.value, UnsafeCheckpointError)
    assert str(path) in str(info.value) and "truncated" in str(info.value)
    assert "stream weights pull" in str(info.value)


@pytest.mark.parametrize("content", [b"", b"<html>404 Not Found</html>"], ids=["empty", "html"])
def test_non_checkpoint_bytes_are_a_model_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "m.pth"
    path.write_bytes(content)
    with pytest.raises(ModelError, match="truncated or not a PyTorch checkpoint"):
        load_state_dict(path)


def test_missing_file_is_a_weights_error(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        load_state_dict(tmp_path / "absent.pth")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("fmt", ["torch_save", "raw_pickle", "raw_pickle_protocol5"])
def test_pickle_that_runs_code_is_refused_and_never_runs(tmp_path: Path, fmt: str) -> None:
    # The payload really does create its marker when unpickled without restrictions:
    # proven here on a separate marker, with bytes this test just made.
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_CreatesFile(probe), protocol=2)).close()  # noqa: S301 (our own bytes)
    assert probe.exists()

    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    payload = {"weight": torch.zeros(2), "hook": _CreatesFile(marker)}
    if fmt == "torch_save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=5 if fmt.endswith("5") else 2))
    with pytest.raises(UnsafeCheckpointError) as info:
        load_state_dict(path)
    assert str(path) in str(info.value) and "could run arbitrary code" in str(info.value)
    assert "io.open" in str(info.value)  # names what it would have called (builtins.open pickles as io.open)
    assert not marker.exists()


def test_super_gradients_layouts_unwrap(tmp_path: Path) -> None:
    sd = _small_state_dict()
    other = {k: torch.zeros_like(v) for k, v in sd.items()}
    cases = {
        "net": {"net": sd, "epoch": 3, "processing_params": {"image_size": 640}},
        "ema_net": {"net": other, "ema_net": sd, "epoch": 3},  # EMA wins, as in super-gradients
        "model": {"model": sd},
        "module_prefix": {"net": {f"module.{k}": v for k, v in sd.items()}},
    }
    for name, checkpoint in cases.items():
        path = tmp_path / f"{name}.pth"
        torch.save(checkpoint, path)
        _assert_same(load_state_dict(path), sd)


def test_checkpoint_without_tensors_is_a_model_error(tmp_path: Path) -> None:
    path = tmp_path / "m.pth"
    torch.save({"epoch": 3, "acc": 0.5}, path)
    with pytest.raises(ModelError, match="not a state dict"):
        load_state_dict(path)
    torch.save(torch.zeros(3), path)
    with pytest.raises(ModelError, match="holds a Tensor"):
        load_state_dict(path)


def test_sha256_file(tmp_path: Path) -> None:
    data = bytes(range(256)) * 10_000  # spans several 1 MiB read blocks
    path = tmp_path / "f"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
