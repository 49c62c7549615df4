"""The ONNX Runtime backend of YOLO-NAS on a CPU (``detect.runtime``).

On this 2-core CPU ONNX Runtime ran yolo_nas_s at 320 px in about 60 ms of CPU per
frame on one thread where the frozen TorchScript artifact took about 85 ms
(/tmp A/B, interleaved; ``docs/architecture.md`` has the figures): its graph
optimiser rewrites the convolutions to a blocked NCHWc layout and fuses their
activations, which TorchScript's CPU path does not.

The ONNX file is exported from the TorchScript artifact (``yolo_nas_export``), so it
needs no super-gradients import either: ``torch.onnx.export`` (TorchScript-based
exporter, opset ``OPSET``) at a batch of 2 with a dynamic batch dimension. It sits
next to the TorchScript file as ``<ts stem>-ort-<key[:12]>.onnx`` (+ ``.json``),
where the key hashes the TorchScript artifact's name (itself a hash of weights, arch,
classes, input size, dtype, device, versions), ``FORMAT``, ``OPSET`` and the
onnxruntime and torch versions, so a change of any of them exports again. Outputs
match the TorchScript path within float32 rounding (tests/unit/test_detect_fidelity.py).

Sessions run sequentially on ``threads`` intra-op threads with spinning off
(``stream.models.onnx_cpu``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

from stream.errors import ModelError
from stream.models import onnx_cpu
from stream.models.cache_file import write_atomic

log = logging.getLogger(__name__)

FORMAT = 1
OPSET = 17
_EXPORT_BATCH = 2


def onnx_path(ts_path: Path) -> Path:
    """The ONNX artifact derived from the TorchScript artifact at ``ts_path``."""
    import torch

    fields = {"ts": ts_path.name, "format": FORMAT, "opset": OPSET, "onnxruntime": onnx_cpu.ort_version(),
              "torch": torch.__version__}
    key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
    return ts_path.with_name(f"{ts_path.stem}-ort-{key[:12]}.onnx")


def export_onnx(module: Any, path: Path, *, input_size: int, meta: dict[str, Any]) -> None:
    """Export ``module`` ((B, 3, S, S) float32 → (boxes, scores)) to ``path`` atomically, with
    ``meta`` (the TorchScript artifact's metadata) in a ``.json`` next to it."""
    import torch

    example = torch.rand(_EXPORT_BATCH, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    started = time.perf_counter()

    def export(name: str) -> None:
        with torch.no_grad(), warnings.catch_warnings():
            # a TorchScript module has no Python signature to read input names from: we give them
            warnings.filterwarnings("ignore", message="no signature found", category=UserWarning)
            torch.onnx.export(
                module, (example,), name, dynamo=False, opset_version=OPSET, input_names=["images"],
                output_names=["boxes", "scores"],
                dynamic_axes={"images": {0: "batch"}, "boxes": {0: "batch"}, "scores": {0: "batch"}},
            )

    write_atomic(path, export, meta={**meta, "runtime": "onnxruntime", "onnx_format": FORMAT})
    log.info("exported %s to ONNX %s in %.1f s", meta.get("arch"), path, time.perf_counter() - started)


class OrtModule:
    """An ONNX Runtime session called like the TorchScript module:
    (B, 3, S, S) float32 CPU tensor → (boxes (B, A, 4), scores (B, A, C)) float32 CPU tensors."""

    def __init__(self, path: Path, *, threads: int) -> None:
        try:
            self.session = onnx_cpu.cpu_session(path, threads=threads)
        except Exception as exc:  # noqa: BLE001 — onnxruntime raises its own untyped errors
            raise ModelError(f"cannot read the cached model {path} ({type(exc).__name__}: {exc}); "
                             "delete it to rebuild") from exc
        self.path = path
        self.threads = threads

    def eval(self) -> OrtModule:
        return self

    def __call__(self, x: Any) -> tuple[Any, Any]:
        import numpy as np
        import torch

        images = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        boxes, scores = self.session.run(None, {"images": images})
        return torch.from_numpy(boxes), torch.from_numpy(scores)


def read_onnx(path: Path, *, threads: int) -> tuple[OrtModule, dict[str, Any]]:
    """(session module, metadata) of an artifact written by ``export_onnx``; ModelError when
    either file cannot be read."""
    try:
        meta = json.loads(path.with_suffix(".json").read_text())
        if meta.get("onnx_format") != FORMAT:
            raise ValueError(f"format {meta.get('onnx_format')}, expected {FORMAT}")
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read the cached model {path} ({type(exc).__name__}: {exc}); "
                         "delete it to rebuild") from exc
    return OrtModule(path, threads=threads), meta
