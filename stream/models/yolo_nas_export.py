"""The YOLO-NAS artifact cache: build through super-gradients once, then load in about a second.

``load_yolo_nas`` looks for a TorchScript artifact in ``cache_dir``; when it is
missing it builds the model with ``build_yolo_nas`` (imports super-gradients, about
25 s here), traces the fused network at the fixed input size with
``torch.jit.trace`` (the trace keeps the anchors cached for that size as constants
and drops the training-time anchor generation super-gradients runs on the CPU in
every eager forward), freezes it (``torch.jit.freeze`` folds the remaining
BatchNorms into the convolutions), writes it atomically and loads it back, so the
first run and every later run use the same artifact. The batch dimension stays
dynamic.

Cache key (``artifact_key``): sha256 of a JSON object holding
``format`` (this module's artifact format version), ``weights`` (sha256 of the
checkpoint file's bytes, or ``random-<seed>``), ``arch``, ``num_classes`` (as
requested; None means "read from the checkpoint", which the checkpoint hash already
pins), ``input_size``, ``dtype`` (float16 on CUDA, float32 on CPU), ``device_type``
('cuda'/'cpu'), ``torch`` and ``super_gradients`` versions. Files:
``<cache_dir>/<arch>-<input_size>-<dtype>-<device_type>-<key[:16]>.ts`` and a
``.json`` next to it (class count, source, random-weights flag). Class names are
not part of the key: they are applied at load time from the caller's arguments.

The artifact is our own file, written by this function; it is a TorchScript
archive (code + tensors), not an arbitrary pickle.

``runtime='onnxruntime'`` (the CPU default of ``detect.runtime``) loads an ONNX file
exported from that TorchScript artifact and cached beside it under its own key
(``stream.models.yolo_nas_onnx``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stream.errors import ModelError, WeightsError
from stream.models import onnx_cpu
from stream.models.cache_file import write_atomic
from stream.models.yolo_nas import (
    YoloNasModel,
    build_yolo_nas,
    check_arch,
    check_input_size,
    resolve_class_names,
    resolve_device,
)

log = logging.getLogger(__name__)

ARTIFACT_FORMAT = 1
_TRACE_BATCH = 2  # not 1, so that no size-1 broadcast is baked into the trace


@contextmanager
def _torchscript() -> Iterator[None]:
    """Silence torch's FutureWarning that TorchScript is deprecated: it is still the format that
    loads in about a second and runs frozen (BatchNorm-folded) graphs; see the module docstring."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        yield


def artifact_key(
    *,
    weights: str,
    arch: str,
    num_classes: int | None,
    input_size: int,
    dtype: str,
    device_type: str,
    torch_version: str,
    sg_version: str,
) -> str:
    """Hex sha256 identifying one artifact (see the module docstring for the fields)."""
    fields = {
        "format": ARTIFACT_FORMAT,
        "weights": weights,
        "arch": arch,
        "num_classes": num_classes,
        "input_size": input_size,
        "dtype": dtype,
        "device_type": device_type,
        "torch": torch_version,
        "super_gradients": sg_version,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _sg_version() -> str:
    try:
        return importlib.metadata.version("super-gradients")
    except importlib.metadata.PackageNotFoundError:
        return "none"


def artifact_path(
    cache_dir: Path,
    *,
    arch: str,
    checkpoint: Path | None,
    num_classes: int | None,
    random_seed: int | None,
    input_size: int,
    device: Any,
) -> Path:
    """Where the artifact for these arguments lives (it may not exist yet)."""
    import torch

    from stream.models.checkpoint import sha256_file

    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise WeightsError(
                f"checkpoint {checkpoint} does not exist; fetch it with `stream weights pull NAME`"
            )
        weights = sha256_file(Path(checkpoint))
    else:
        weights = f"random-{random_seed}"
    dtype = "float16" if device.type == "cuda" else "float32"
    key = artifact_key(
        weights=weights,
        arch=arch,
        num_classes=num_classes,
        input_size=input_size,
        dtype=dtype,
        device_type=device.type,
        torch_version=torch.__version__,
        sg_version=_sg_version(),
    )
    return Path(cache_dir) / f"{arch}-{input_size}-{dtype}-{device.type}-{key[:16]}.ts"


def export_artifact(model: YoloNasModel, path: Path, *, default_names: Sequence[str] | None = None) -> None:
    """Trace and freeze ``model.module`` at (2, 3, S, S) and write it (and its .json) atomically.

    ``default_names``: class names a later load uses when it is given none (stored in the .json)."""
    import torch

    memory_format = torch.channels_last if model.channels_last else torch.contiguous_format
    example = torch.rand(
        _TRACE_BATCH, 3, model.input_size, model.input_size, generator=torch.Generator().manual_seed(0)
    )
    example = example.to(device=model.device, dtype=model.dtype, memory_format=memory_format)
    started = time.perf_counter()
    with torch.no_grad(), _torchscript():
        traced = torch.jit.trace(model.module, example, check_trace=False)
        frozen = torch.jit.freeze(traced.eval())
    meta = {
        "format": ARTIFACT_FORMAT,
        "arch": model.arch,
        "num_classes": model.num_classes,
        "input_size": model.input_size,
        "dtype": str(model.dtype).removeprefix("torch."),
        "channels_last": model.channels_last,
        "random_weights": model.random_weights,
        "source": model.source,
        "torch": torch.__version__,
    }
    if default_names is not None:
        meta["class_names"] = list(default_names)

    def save(name: str) -> None:
        with _torchscript():
            torch.jit.save(frozen, name)

    write_atomic(path, save, meta=meta)  # a second worker never reads a half-written file
    log.info("exported %s to %s in %.1f s", model.arch, path, time.perf_counter() - started)


def _read_files(path: Path, device: Any) -> tuple[Any, dict[str, Any]]:
    """(TorchScript module on ``device``, metadata); ModelError when either cannot be read."""
    import torch

    try:
        meta = json.loads(path.with_suffix(".json").read_text())
        if meta.get("format") != ARTIFACT_FORMAT:
            raise ValueError(f"format {meta.get('format')}, expected {ARTIFACT_FORMAT}")
        with _torchscript():
            module = torch.jit.load(str(path), map_location=device)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelError(
            f"cannot read the cached model {path} ({type(exc).__name__}: {exc}); delete it to rebuild"
        ) from exc
    return module.eval(), meta


def _to_model(
    module: Any, meta: dict[str, Any], device: Any, class_names: Sequence[str] | None
) -> YoloNasModel:
    import torch

    return YoloNasModel(
        arch=meta["arch"],
        module=module,
        class_names=resolve_class_names(int(meta["num_classes"]), class_names),
        input_size=int(meta["input_size"]),
        device=device,
        dtype=getattr(torch, meta["dtype"]),
        channels_last=bool(meta["channels_last"]),
        random_weights=bool(meta["random_weights"]),
        source=str(meta["source"]),
    )


def read_artifact(path: Path, *, device: Any, class_names: Sequence[str] | None = None) -> YoloNasModel:
    """Load an artifact written by ``export_artifact`` onto ``device`` (no super-gradients import).

    ``class_names``: None → the names stored with it, else the COCO / class_N defaults."""
    module, meta = _read_files(path, device)
    return _to_model(
        module, meta, device, class_names if class_names is not None else meta.get("class_names")
    )


RUNTIMES = ("auto", "torchscript", "onnxruntime")


def resolve_runtime(runtime: str, device: Any) -> str:
    """``detect.runtime`` on ``device``: 'auto' → 'onnxruntime' on the CPU (faster there, see
    stream.models.yolo_nas_onnx) and 'torchscript' on CUDA (``stream.models.onnx_cpu.resolve_runtime``:
    ModelError for an unknown name or ONNX Runtime on a GPU)."""
    return onnx_cpu.resolve_runtime("detect", runtime, device, runtimes=RUNTIMES, gpu_runtime="torchscript")


def load_yolo_nas(
    arch: str,
    *,
    cache_dir: Path,
    checkpoint: Path | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    random_seed: int | None = None,
    device: str = "auto",
    input_size: int = 640,
    runtime: str = "torchscript",
    threads: int | None = None,
) -> YoloNasModel:
    """``build_yolo_nas`` through the artifact cache in ``cache_dir`` (same arguments).

    A hit loads in about a second without importing super-gradients; a miss builds,
    exports and then loads the artifact. A cached artifact that cannot be read is
    rebuilt. runtime: 'torchscript' (the module is TorchScript: (B, 3, S, S) → (boxes,
    scores)), 'onnxruntime' (an ``OrtModule`` with the same contract, exported from the
    TorchScript artifact; CPU only) or 'auto' (see ``resolve_runtime``). threads: ONNX
    Runtime's intra-op threads (default torch's current count).
    """
    check_arch(arch)
    check_input_size(input_size)
    dev = resolve_device(device)
    chosen = resolve_runtime(runtime, dev)
    path = artifact_path(
        Path(cache_dir),
        arch=arch,
        checkpoint=checkpoint,
        num_classes=num_classes,
        random_seed=random_seed,
        input_size=input_size,
        device=dev,
    )

    def torchscript() -> tuple[Any, dict[str, Any]]:
        return _torchscript_files(
            path, dev, arch=arch, checkpoint=checkpoint, num_classes=num_classes, class_names=class_names,
            random_seed=random_seed, input_size=input_size,
        )

    if chosen == "onnxruntime":
        import torch

        module, meta = _onnx_files(path, torchscript, threads or torch.get_num_threads())
    else:
        module, meta = torchscript()
    return _to_model(module, meta, dev, class_names if class_names is not None else meta.get("class_names"))


def _torchscript_files(path: Path, dev: Any, *, arch: str, checkpoint: Path | None, num_classes: int | None,
                       class_names: Sequence[str] | None, random_seed: int | None,
                       input_size: int) -> tuple[Any, dict[str, Any]]:
    """(TorchScript module, metadata) from the cache, built and exported first on a miss."""
    if path.is_file() and path.with_suffix(".json").is_file():
        try:
            module, meta = _read_files(path, dev)
        except ModelError as exc:
            log.warning("%s; rebuilding it", exc)
        else:
            log.info("loaded %s from the cache %s", arch, path)
            return module, meta
    log.info("%s at %d px on %s is not in the cache yet: building it through super-gradients "
             "(about 30 s, once; later runs load it in about a second)", arch, input_size, dev.type)
    eager = build_yolo_nas(
        arch,
        checkpoint=checkpoint,
        num_classes=num_classes,
        class_names=class_names,
        random_seed=random_seed,
        device=str(dev),
        input_size=input_size,
    )
    # Without names from the config, the artifact keeps the ones the build chose (read from the
    # checkpoint, else COCO's or class_N), so a cache hit needs no second read of the checkpoint.
    export_artifact(eager, path, default_names=eager.class_names if class_names is None else None)
    return _read_files(path, dev)


def _onnx_files(ts_path: Path, torchscript: Any, threads: int) -> tuple[Any, dict[str, Any]]:
    """(ONNX Runtime module, metadata) from the cache, exported from the TorchScript artifact
    (``torchscript()``: loaded or built) on a miss."""
    from stream.models.yolo_nas_onnx import export_onnx, onnx_path, read_onnx

    path = onnx_path(ts_path)
    if path.is_file() and path.with_suffix(".json").is_file():
        try:
            module, meta = read_onnx(path, threads=threads)
        except ModelError as exc:
            log.warning("%s; rebuilding it", exc)
        else:
            log.info("loaded %s (ONNX Runtime, %d threads) from the cache %s", meta["arch"], threads, path)
            return module, {**meta, "channels_last": False}
    ts_module, ts_meta = torchscript()
    with _torchscript():
        export_onnx(ts_module, path, input_size=int(ts_meta["input_size"]), meta=ts_meta)
    module, meta = read_onnx(path, threads=threads)
    return module, {**meta, "channels_last": False}
