"""Checkpoint loading: weights_only round-trips, corrupt files, refused pickles, super-gradients layouts."""

from __future__ import annotations

import builtins
import hashlib
import json
import pickle
from pathlib import Path

import pytest
import torch

from stream.errors import ModelError, UnsafeCheckpointError, WeightsError
from stream.models.checkpoint import check_state_shapes, load_state_dict, read_checkpoint, sha256_file


def _small_state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2))
    return model.state_dict()


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], *, ordered: bool = True) -> None:
    assert list(a) == list(b) if ordered else sorted(a) == sorted(b)  # safetensors stores keys sorted
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


# ---------------------------------------------------------------- safetensors, prefixes, class names


def _save_safetensors(
    path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)


@pytest.mark.parametrize("prefix", ["", "net.", "net.module.", "ema_model.", "ema_model.module.", "module."])
def test_safetensors_with_super_gradients_prefixes_round_trip(tmp_path: Path, prefix: str) -> None:
    sd = _small_state_dict()
    path = tmp_path / "m.safetensors"
    _save_safetensors(path, {prefix + k: v for k, v in sd.items()})
    _assert_same(load_state_dict(path), sd, ordered=False)


def test_flattened_file_with_net_and_ema_prefers_ema(tmp_path: Path) -> None:
    sd = _small_state_dict()
    other = {k: torch.zeros_like(v) for k, v in sd.items()}
    path = tmp_path / "both.safetensors"
    _save_safetensors(
        path, {**{f"net.{k}": v for k, v in other.items()}, **{f"ema_net.{k}": v for k, v in sd.items()}}
    )
    _assert_same(load_state_dict(path), sd, ordered=False)


def test_safetensors_is_told_by_content_not_suffix(tmp_path: Path) -> None:
    sd = _small_state_dict()
    path = tmp_path / "downloaded.bin"
    _save_safetensors(path, sd)
    ckpt = read_checkpoint(path)
    assert ckpt.format == "safetensors"
    _assert_same(ckpt.state, sd, ordered=False)


def test_class_names_from_safetensors_metadata_and_pth_processing_params(tmp_path: Path) -> None:
    sd = _small_state_dict()
    st = tmp_path / "m.safetensors"
    _save_safetensors(st, sd, {"class_names": json.dumps(["cat", "dog"])})
    assert read_checkpoint(st).class_names == ("cat", "dog")
    _save_safetensors(st, sd, {"format": "pt"})
    assert read_checkpoint(st).class_names is None

    pth = tmp_path / "m.pth"  # what super-gradients' trainer writes (plain containers: weights_only reads it)
    torch.save({"net": sd, "processing_params": {"class_names": ["a", "b"], "iou": 0.7}}, pth)
    assert read_checkpoint(pth).class_names == ("a", "b")


def test_truncated_safetensors_is_a_model_error(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    _save_safetensors(path, _small_state_dict())
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ModelError, match=r"m\.safetensors.*not a safetensors file"):
        load_state_dict(path)


def test_shape_check_names_key_expected_and_got_in_one_line() -> None:
    want = {"a.weight": torch.zeros(4, 3), "a.bias": torch.zeros(4), "b.weight": torch.zeros(2, 4)}
    check_state_shapes(want, dict(want), arch="tiny", source="f.pth")  # all fit: no error
    with pytest.raises(ModelError) as info:
        check_state_shapes(want, {**want, "a.weight": torch.zeros(5, 3)}, arch="tiny", source="f.pth")
    message = str(info.value)
    assert "\n" not in message
    assert "a.weight expected (4, 3), got (5, 3)" in message and "f.pth" in message
    with pytest.raises(ModelError, match=r"1 missing keys \(e\.g\. b\.weight\)"):
        check_state_shapes(want, {k: v for k, v in want.items() if k != "b.weight"}, arch="tiny", source="f")
    with pytest.raises(ModelError, match=r"1 unexpected keys \(e\.g\. extra\)"):
        check_state_shapes(want, {**want, "extra": torch.zeros(1)}, arch="tiny", source="f")
