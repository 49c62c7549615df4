"""YOLO-NAS (super-gradients 3.7.1): build the model from a checkpoint or seeded random weights.

``build_yolo_nas`` imports super-gradients (about 25 s on a 2-core CPU), checks the
checkpoint against the requested architecture and class count, loads it, fuses
the model for inference the way ``model.predict()`` does
(``prep_model_for_conversion``), caches the anchors for the fixed input size and
moves it to the device (fp16 on CUDA, fp32 on the CPU; channels_last on both).
``stream.models.yolo_nas_export.load_yolo_nas`` wraps it with an on-disk
TorchScript cache that loads in about a second without super-gradients; the
detector itself (pre- and post-processing) is ``stream.models.yolo_nas_detector``.

The wrapped module takes a (B, 3, S, S) float batch (RGB, values in [0, 1],
letterboxed to S × S) and returns ``(boxes, scores)``: boxes (B, A, 4) XYXY in
letterboxed-input pixels, scores (B, A, C) per-class sigmoid scores, with
A = 8400 anchors at S = 640.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stream.errors import DeviceError, ModelError
from stream.objects import COCO_CLASSES

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

ARCHS = ("yolo_nas_s", "yolo_nas_m", "yolo_nas_l")

# The classification conv of the first head: its out-channels are the class count, its
# in-channels tell the architectures apart (measured on super-gradients 3.7.1 state dicts,
# which hold 921 / 965 / 1097 entries for s / m / l).
HEAD_CLS_KEY = "heads.head1.cls_pred.weight"
_HEAD_IN_CHANNELS = {64: "yolo_nas_s", 96: "yolo_nas_m", 128: "yolo_nas_l"}


@dataclass(frozen=True)
class YoloNasProcessing:
    """Pre/post-processing of the official COCO weights (``default_yolo_nas_coco_processing_params``).

    The frame (BGR) is reversed to RGB, scaled keeping its aspect ratio so that its
    longest side is ``rescale_size`` (cv2 INTER_LINEAR, skipped at scale 1), padded to
    ``input_size`` × ``input_size`` with ``pad_value`` centred (top/left get the
    smaller half), divided by 255. Detections: scores > ``conf``, one box per
    (anchor, class) above it when ``multi_label_per_box``, the ``nms_top_k`` best,
    class-aware NMS at ``iou``, at most ``max_predictions`` kept.
    """

    input_size: int = 640
    rescale_size: int = 636
    pad_value: int = 114
    conf: float = 0.25
    iou: float = 0.7
    nms_top_k: int = 1024
    max_predictions: int = 300
    multi_label_per_box: bool = True
    class_agnostic_nms: bool = False

    @classmethod
    def for_input_size(cls, input_size: int) -> YoloNasProcessing:
        """COCO processing at another square input size: the scaled frame keeps the 4-pixel margin."""
        check_input_size(input_size)
        return cls(input_size=input_size, rescale_size=input_size - 4)


@dataclass(frozen=True, eq=False)
class YoloNasModel:
    """A YOLO-NAS network ready for inference, and what the detector needs to know about it.

    module: (B, 3, S, S) ``dtype`` RGB in [0, 1] on ``device`` → (boxes (B, A, 4) XYXY in
        letterboxed pixels, scores (B, A, C)); an eager ``nn.Module`` or a TorchScript module.
    class_names: C names in output order.
    channels_last: feed the module channels_last input (what it was traced/converted with).
    random_weights: True when the weights are seeded random ones; outputs are not detections.
    source: the checkpoint path, or ``random-<seed>``.
    """

    arch: str
    module: Any
    class_names: tuple[str, ...]
    input_size: int
    device: torch.device
    dtype: torch.dtype
    channels_last: bool
    random_weights: bool
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise ModelError(f"unknown YOLO-NAS architecture {arch!r} (detect.arch); allowed: {', '.join(ARCHS)}")


def check_input_size(input_size: int) -> None:
    if not isinstance(input_size, int) or input_size < 64 or input_size % 32:
        raise ModelError(
            f"detector input size {input_size!r} is not usable: YOLO-NAS needs a multiple of 32, at least 64 "
            "(e.g. 320 or 640)"
        )


def resolve_device(device: str, key: str = "detect.device") -> torch.device:
    """'auto' → the first CUDA device if there is one, else the CPU; 'cpu', 'cuda', 'cuda:N' as given.
    DeviceError (naming ``key``) for a CUDA device that is not there."""
    import torch

    if device == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ModelError(
            f"unknown device {device!r} (detect.device); use 'auto', 'cpu' or 'cuda:N'"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"{key}: {device!r} asked for, but torch sees no CUDA device; use 'cpu' or 'auto'"
            )
        if (dev.index or 0) >= torch.cuda.device_count():
            raise DeviceError(
                f"{key}: {device!r} does not exist: torch sees {torch.cuda.device_count()} CUDA device(s)"
            )
    elif dev.type != "cpu":
        raise ModelError(f"unsupported device {device!r} (detect.device); use 'auto', 'cpu' or 'cuda:N'")
    return dev


def resolve_class_names(num_classes: int, class_names: Sequence[str] | None) -> tuple[str, ...]:
    """The given names (their count must be ``num_classes``), else the COCO names for 80 classes,
    else ``class_0`` … ``class_{C-1}``."""
    if class_names is not None:
        names = tuple(str(n) for n in class_names)
        if len(names) != num_classes:
            raise ModelError(
                f"{len(names)} class names given (detect.class_names) but the model has {num_classes} classes"
            )
        if len(set(names)) != len(names):
            raise ModelError(f"class names must be unique (detect.class_names); got {list(names)}")
        return names
    if num_classes == len(COCO_CLASSES):
        return COCO_CLASSES
    log.warning(
        "no class names given for a %d-class model; naming them class_0 … class_%d",
        num_classes,
        num_classes - 1,
    )
    return tuple(f"class_{i}" for i in range(num_classes))


def guess_arch(state: Mapping[str, Any]) -> str | None:
    """The architecture a YOLO-NAS state dict belongs to, from its first head's width; None if unknown."""
    weight = state.get(HEAD_CLS_KEY)
    if weight is None or weight.ndim != 4:
        return None
    return _HEAD_IN_CHANNELS.get(int(weight.shape[1]))


def checkpoint_num_classes(state: Mapping[str, Any], source: str) -> int:
    """Class count of a YOLO-NAS state dict, from the out-channels of its classification conv."""
    weight = state.get(HEAD_CLS_KEY)
    if weight is None or weight.ndim != 4:
        raise ModelError(
            f"checkpoint {source} is not a YOLO-NAS checkpoint: it has no {HEAD_CLS_KEY!r} "
            f"(first keys: {list(state)[:5]})"
        )
    return int(weight.shape[0])


def check_checkpoint(state: Mapping[str, Any], *, arch: str, num_classes: int | None, source: str) -> int:
    """Check a state dict against the requested arch and class count; returns its class count.

    Raises ModelError naming both sides ("looks like yolo_nas_m, config says yolo_nas_s",
    "has 2 classes … but detect.num_classes is 80").
    """
    guessed = guess_arch(state)
    if guessed is not None and guessed != arch:
        shape = tuple(state[HEAD_CLS_KEY].shape)
        raise ModelError(
            f"checkpoint {source} looks like {guessed} ({HEAD_CLS_KEY} has shape {shape}), "
            f"config says {arch} (detect.arch); set detect.arch to {guessed} or use a {arch} checkpoint"
        )
    found = checkpoint_num_classes(state, source)
    if num_classes is not None and found != num_classes:
        shape = tuple(state[HEAD_CLS_KEY].shape)
        raise ModelError(
            f"checkpoint {source} has {found} classes (head shape {shape}) but detect.num_classes is "
            f"{num_classes}; set detect.num_classes to {found} (or leave it unset) or use a matching checkpoint"
        )
    return found


def _compare_state(expected: Mapping[str, Any], got: Mapping[str, Any], *, arch: str, source: str) -> None:
    """ModelError naming the first mis-shaped tensor (key, expected, got), missing and unexpected keys."""
    from stream.models.checkpoint import check_state_shapes

    guessed = guess_arch(got)
    hint = f"; it looks like {guessed}" if guessed and guessed != arch else ""
    check_state_shapes(expected, got, arch=arch, source=source, hint=hint)


def import_sg_models() -> Any:
    """super_gradients.training.models, imported quietly (see ``stream.models.sg_env``; ~25 s)."""
    from stream.models.sg_env import import_super_gradients

    return import_super_gradients("super_gradients.training.models")


def build_network(arch: str, num_classes: int, random_seed: int | None) -> Any:
    import torch

    models = import_sg_models()
    with torch.random.fork_rng(devices=[]):
        if random_seed is not None:
            torch.manual_seed(random_seed)
        return models.get(arch, num_classes=num_classes)


def _wrap(net: Any) -> Any:
    """An nn.Module returning only the decoded (boxes, scores) of ``net``.

    In eager mode YOLO-NAS returns ``((boxes, scores), raw_predictions)``; under
    ``torch.jit.trace`` its head returns ``(boxes, scores)`` alone and skips building
    the training-time anchors.
    """
    import torch

    class YoloNasDecoded(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = self.inner(x)
            if torch.jit.is_tracing():
                return out[0], out[1]
            return out[0][0], out[0][1]

    return YoloNasDecoded(net).eval()


def prepare_for_inference(net: Any, *, input_size: int, device: torch.device) -> tuple[Any, torch.dtype]:
    """Fuse (as ``predict()`` does), cache anchors, move to ``device``; returns (module, dtype).

    fp16 on CUDA, fp32 on the CPU; channels_last on both (on this 2-core CPU the frozen
    trace ran 258 ms vs 376 ms contiguous at 640, batch 1).
    """
    import torch

    net.eval()
    net.prep_model_for_conversion(input_size=(input_size, input_size))
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    net = net.to(device=device, dtype=dtype).to(memory_format=torch.channels_last)
    # Anchors as buffers for the fixed input size, instead of rebuilt on the CPU every forward.
    net.heads.cache_anchors((input_size, input_size))
    for p in net.parameters():
        p.requires_grad_(False)
    return _wrap(net), dtype


def build_yolo_nas(
    arch: str,
    *,
    checkpoint: Path | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    random_seed: int | None = None,
    device: str = "auto",
    input_size: int = 640,
) -> YoloNasModel:
    """Build an eager, fused YOLO-NAS ready for ``YoloNasDetector`` (imports super-gradients).

    checkpoint: an official COCO checkpoint (80 classes, COCO names) or a fine-tuned
        super-gradients one (.pth or safetensors; ``net``/``ema_net`` unwrapped; class count
        read from the head when ``num_classes`` is None; class names from the file when it
        stores them and ``class_names`` is None). Refused (ModelError) when it was trained
        for another architecture or class count, or any tensor's shape differs.
    random_seed: without a checkpoint, seeded random weights (``num_classes`` or 80);
        the global torch RNG is left as it was.
    device: 'auto' | 'cpu' | 'cuda' | 'cuda:N'. input_size: square network input S (multiple of 32).
    """
    check_arch(arch)
    check_input_size(input_size)
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
        raise ModelError(f"detect.num_classes must be a positive integer, got {num_classes!r}")
    if checkpoint is None and random_seed is None:
        raise ModelError(
            f"no weights for {arch}: give a checkpoint (detect.checkpoint, see `stream weights pull`) "
            "or ask for seeded random weights (--random-weights / detect.random_seed)"
        )
    if checkpoint is not None and random_seed is not None:
        raise ModelError(
            f"both a checkpoint ({checkpoint}) and a random seed ({random_seed}) given; pick one "
            "(detect.checkpoint or detect.random_seed)"
        )
    dev = resolve_device(device)
    if checkpoint is not None:
        from stream.models.checkpoint import read_checkpoint

        ckpt = read_checkpoint(Path(checkpoint))
        state = ckpt.state
        n_classes = check_checkpoint(state, arch=arch, num_classes=num_classes, source=str(checkpoint))
        net = build_network(arch, n_classes, random_seed=None)
        _compare_state(net.state_dict(), state, arch=arch, source=str(checkpoint))
        net.load_state_dict(state, strict=True)
        source = str(checkpoint)
        if class_names is None and ckpt.class_names is not None:
            if len(ckpt.class_names) == n_classes:
                class_names = ckpt.class_names
                log.info("%s: class names read from the checkpoint (%s, …)", source, ckpt.class_names[0])
            else:
                log.warning(
                    "%s stores %d class names for a %d-class head; ignoring them",
                    source,
                    len(ckpt.class_names),
                    n_classes,
                )
    else:
        n_classes = num_classes or len(COCO_CLASSES)
        net = build_network(arch, n_classes, random_seed=random_seed)
        source = f"random-{random_seed}"
        log.warning("%s has random weights (seed %s): its outputs are not detections", arch, random_seed)
    names = resolve_class_names(n_classes, class_names)
    module, dtype = prepare_for_inference(net, input_size=input_size, device=dev)
    log.info("built %s (%d classes) from %s on %s (%s)", arch, n_classes, source, dev, dtype)
    return YoloNasModel(
        arch=arch,
        module=module,
        class_names=names,
        input_size=input_size,
        device=dev,
        dtype=dtype,
        channels_last=True,
        random_weights=checkpoint is None,
        source=source,
    )
