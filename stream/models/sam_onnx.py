"""SAM's prompt encoder + mask decoder on ONNX Runtime, for a CPU (``segment.runtime``).

The decoder runs once per box prompt over the whole image embedding (segment-anything
repeats the embedding per box), so on a CPU its cost grows with the boxes of a
keyframe: about 9 ms per box for the small test SAM here in PyTorch, where the same
graph on ONNX Runtime took 22 ms instead of 37 ms for 4 boxes (one thread, measured
back to back; outputs equal to 3e-7). ONNX Runtime fuses the many small
transposes, adds, softmaxes and layer norms around the matmuls.

``OrtSamDecoder.export`` traces the model's own modules (box prompts only,
one mask per box) with ``torch.onnx.export`` (a few seconds) and opens a session with
``threads`` intra-op threads, spinning off (``stream.models.onnx_cpu``).
``OrtSamDecoder.load`` does that through a cache folder: the file
``sam_<arch>-decoder-<key[:16]>.onnx``, key = sha256 of the decoder's and prompt
encoder's tensors (names, dtypes, shapes, bytes: the weights that are really loaded,
~16 MB to hash, milliseconds), ``FORMAT``, ``OPSET`` and the torch and onnxruntime
versions; written atomically. Multimask decoding stays on PyTorch.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from stream.errors import ModelError
from stream.models import onnx_cpu
from stream.models.cache_file import write_atomic

if TYPE_CHECKING:
    from stream.models.sam import SamModel

log = logging.getLogger(__name__)

OPSET = 17
FORMAT = 1
RUNTIMES = ("auto", "torch", "onnxruntime")


def resolve_runtime(runtime: str, device: torch.device) -> str:
    """``segment.runtime`` on ``device``: 'auto' → 'onnxruntime' on the CPU, 'torch' elsewhere
    (``stream.models.onnx_cpu.resolve_runtime``: ModelError for an unknown name or ONNX Runtime on a GPU)."""
    return onnx_cpu.resolve_runtime("segment", runtime, device, runtimes=RUNTIMES, gpu_runtime="torch")


class _BoxDecoder(torch.nn.Module):
    """(features (1, 256, E, E), boxes (N, 4) XYXY in SAM input pixels) →
    (low-res logits (N, 1, 4E, 4E), predicted IoU (N, 1)), as ``SamSegmenter._decode``."""

    def __init__(self, sam: Any) -> None:
        super().__init__()
        self.prompt_encoder = sam.prompt_encoder
        self.mask_decoder = sam.mask_decoder

    def forward(self, features: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sparse, dense = self.prompt_encoder(points=None, boxes=boxes, masks=None)
        low, iou = self.mask_decoder(
            image_embeddings=features,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        return low, iou


class OrtSamDecoder:
    """SAM's box-prompt decoder as an ONNX Runtime session: called with (features, boxes)
    torch tensors like ``_BoxDecoder``, returns float32 CPU tensors."""

    def __init__(self, model_bytes: bytes, *, threads: int) -> None:
        self.session = onnx_cpu.cpu_session(model_bytes, threads=threads)
        self.threads = threads

    @classmethod
    def export(cls, model: SamModel, *, threads: int) -> OrtSamDecoder:
        """Export ``model``'s prompt encoder + mask decoder (CPU, fp32) and open a session."""
        return cls(_export_bytes(model), threads=threads)

    @classmethod
    def load(cls, model: SamModel, cache_dir: Path, *, threads: int) -> OrtSamDecoder:
        """``export`` through the cache in ``cache_dir`` (see the module docstring); a cached
        file that cannot be opened is exported again."""
        path = Path(cache_dir) / f"sam_{model.arch.name}-decoder-{decoder_key(model)[:16]}.onnx"
        if path.is_file():
            try:
                return cls(path.read_bytes(), threads=threads)
            except Exception as exc:  # noqa: BLE001 — onnxruntime raises its own untyped errors
                log.warning("cannot read the cached SAM decoder %s (%s); exporting it again", path, exc)
        data = _export_bytes(model)
        write_atomic(path, lambda name: Path(name).write_bytes(data))
        return cls(data, threads=threads)

    def __call__(self, features: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = np.ascontiguousarray(features.detach().cpu().numpy(), dtype=np.float32)
        b = np.ascontiguousarray(boxes.detach().cpu().numpy(), dtype=np.float32)
        low, iou = self.session.run(None, {"features": feats, "boxes": b})
        return torch.from_numpy(low), torch.from_numpy(iou)


def decoder_key(model: SamModel) -> str:
    """Hex sha256 of what the exported decoder depends on (see the module docstring)."""
    h = hashlib.sha256(json.dumps({"format": FORMAT, "opset": OPSET, "arch": model.arch.name,
                                   "torch": torch.__version__, "onnxruntime": onnx_cpu.ort_version()}).encode())
    for part in (model.sam.prompt_encoder, model.sam.mask_decoder):
        for name, t in part.state_dict().items():
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _export_bytes(model: SamModel) -> bytes:
    """The ONNX bytes of ``model``'s prompt encoder + mask decoder (CPU, fp32)."""
    if model.device.type != "cpu":
        raise ModelError(f"segment.runtime 'onnxruntime' runs on the CPU only, the model is on {model.device}")
    grid = model.arch.img_size // model.arch.patch_size
    features = torch.randn(1, 256, grid, grid, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([[8.0, 8.0, 96.0, 120.0], [30.0, 40.0, 200.0, 180.0]])
    buf = io.BytesIO()
    started = time.perf_counter()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python ints in segment-anything's code
        torch.onnx.export(
            _BoxDecoder(model.sam).eval(), (features, boxes), buf,  # type: ignore[arg-type]  # file-like works
            dynamo=False, opset_version=OPSET,
            input_names=["features", "boxes"], output_names=["low", "iou"],
            dynamic_axes={"boxes": {0: "n"}, "low": {0: "n"}, "iou": {0: "n"}},
        )
    log.info("SAM %s decoder exported to ONNX in %.1f s", model.arch.name, time.perf_counter() - started)
    return buf.getvalue()
