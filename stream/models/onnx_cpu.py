"""ONNX Runtime on the CPU, for every model that has an ONNX backend (``detect.runtime``,
``segment.runtime``): which runtime a setting means on a device, and the one way a
session is opened.

Sessions run sequentially on ``threads`` intra-op threads (one inter-op thread), with
every graph optimisation on and spinning off: in a pipeline of processes sharing few
cores, a spinning idle pool thread takes a core from another stage. Only the CPU
execution provider is installed, so ONNX Runtime on a GPU is refused with the setting
to use instead. onnxruntime is imported only when a session or its version is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stream.errors import ModelError


def resolve_runtime(section: str, runtime: str, device: Any, *, runtimes: tuple[str, ...], gpu_runtime: str) -> str:
    """The runtime ``<section>.runtime`` means on ``device`` (a torch.device): 'auto' →
    'onnxruntime' on the CPU and ``gpu_runtime`` elsewhere; the others as given.

    ModelError naming the key for a name outside ``runtimes``, or for 'onnxruntime' on a device
    that is not the CPU (it says to use ``gpu_runtime`` or 'auto' there)."""
    if runtime not in runtimes:
        raise ModelError(f"{section}.runtime {runtime!r} is not one of {', '.join(runtimes)}")
    if runtime == "auto":
        return "onnxruntime" if device.type == "cpu" else gpu_runtime
    if runtime == "onnxruntime" and device.type != "cpu":
        raise ModelError(
            f"{section}.runtime 'onnxruntime' runs on the CPU only, {section}.device is {device}; "
            f"use '{gpu_runtime}' (or 'auto') on CUDA"
        )
    return runtime


def cpu_session(model: bytes | Path, *, threads: int) -> Any:
    """An ``onnxruntime.InferenceSession`` on the CPU provider for ``model`` (the ONNX bytes or
    a file), ``threads`` intra-op threads, as the module docstring says. onnxruntime raises
    its own untyped errors for a model it cannot read: callers say what to do about them."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3  # errors only: its warnings are about graph rewrites
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), opts,
                                providers=["CPUExecutionProvider"])


def ort_version() -> str:
    """onnxruntime's version, for the cache keys of exported files."""
    import onnxruntime

    return str(onnxruntime.__version__)
