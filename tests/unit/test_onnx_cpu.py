"""ONNX Runtime on the CPU (``stream.models.onnx_cpu``): the one runtime resolver both ONNX
backends use, and the one way their sessions are opened."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from stream.errors import ModelError
from stream.models import onnx_cpu, sam_onnx, yolo_nas_export

CPU, CUDA = torch.device("cpu"), torch.device("cuda:0")


def test_the_refusals_name_the_key_what_is_allowed_and_what_to_use() -> None:
    kw = {"runtimes": ("auto", "torch", "onnxruntime"), "gpu_runtime": "torch"}
    with pytest.raises(ModelError) as unknown:
        onnx_cpu.resolve_runtime("segment", "tensorrt", CPU, **kw)
    assert str(unknown.value) == "segment.runtime 'tensorrt' is not one of auto, torch, onnxruntime"
    with pytest.raises(ModelError) as gpu:
        onnx_cpu.resolve_runtime("segment", "onnxruntime", CUDA, **kw)
    assert str(gpu.value) == ("segment.runtime 'onnxruntime' runs on the CPU only, segment.device is cuda:0; "
                              "use 'torch' (or 'auto') on CUDA")
    assert onnx_cpu.resolve_runtime("segment", "auto", CUDA, **kw) == "torch"


@pytest.mark.parametrize(("resolve", "section", "gpu"), [(sam_onnx.resolve_runtime, "segment", "torch"),
                                                         (yolo_nas_export.resolve_runtime, "detect", "torchscript")])
def test_both_models_resolve_through_it_with_their_own_key_and_gpu_runtime(resolve, section, gpu) -> None:
    assert resolve("auto", CPU) == "onnxruntime"
    assert resolve("auto", CUDA) == gpu
    with pytest.raises(ModelError, match=rf"^{section}\.runtime 'onnxruntime' runs on the CPU only, "
                                         rf"{section}\.device is cuda:0; use '{gpu}' \(or 'auto'\) on CUDA$"):
        resolve("onnxruntime", CUDA)


def _onnx_bytes() -> bytes:
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(torch.nn.Linear(4, 2).eval(), (torch.ones(1, 4),), buf, dynamo=False,  # type: ignore[arg-type]
                          opset_version=17, input_names=["x"], output_names=["y"])
    return buf.getvalue()


def test_a_session_from_bytes_or_a_file_runs_on_the_threads_asked_for_without_spinning(tmp_path) -> None:
    data = _onnx_bytes()
    path = tmp_path / "m.onnx"
    path.write_bytes(data)
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    outs = []
    for model in (data, path):
        session = onnx_cpu.cpu_session(model, threads=1)
        opts = session.get_session_options()
        assert opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1
        assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
        assert session.get_providers() == ["CPUExecutionProvider"]
        outs.append(session.run(None, {"x": x})[0])
    np.testing.assert_array_equal(outs[0], outs[1])
