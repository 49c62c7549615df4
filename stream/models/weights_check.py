"""What a checkpoint file holds, and whether it loads as a given architecture.

``identify`` reads the file (weights_only / safetensors, see ``stream.models.checkpoint``)
and tells the family and architecture from tensor shapes alone: cheap, no model is
built. ``check_architecture`` also builds the architecture's own state dict (on the
``meta`` device: shapes only, no memory for the weights) and checks every key and
shape against it; for YOLO-NAS that imports super-gradients (about 25 s the first time).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from stream.errors import ModelError
from stream.models.checkpoint import Checkpoint, read_checkpoint

Family = Literal["yolo_nas", "sam"]


@dataclass(frozen=True)
class CheckpointInfo:
    """family/arch: e.g. ``yolo_nas``/``yolo_nas_s`` or ``sam``/``vit_b``.
    num_classes: YOLO-NAS class count (None for SAM). class_names: stored in the file, or None.
    format: ``pth`` or ``safetensors``. tensors: number of entries in the state dict."""

    path: Path
    family: Family
    arch: str
    num_classes: int | None
    class_names: tuple[str, ...] | None
    format: str
    tensors: int


def _describe(ckpt: Checkpoint, path: Path) -> CheckpointInfo:
    from stream.models.sam import checkpoint_arch
    from stream.models.yolo_nas import HEAD_CLS_KEY, checkpoint_num_classes, guess_arch

    state = ckpt.state
    yolo = guess_arch(state)
    if yolo is not None:
        n = checkpoint_num_classes(state, str(path))
        return CheckpointInfo(path, "yolo_nas", yolo, n, ckpt.class_names, ckpt.format, len(state))
    sam = checkpoint_arch(state)
    if sam is not None and sam.name != "unknown":
        return CheckpointInfo(path, "sam", sam.name, None, None, ckpt.format, len(state))
    raise ModelError(
        f"{path} is neither a YOLO-NAS checkpoint (no {HEAD_CLS_KEY} of a known width) nor a SAM one "
        f"({len(state)} tensors, first keys: {', '.join(list(state)[:3])})"
    )


def _expect(info: CheckpointInfo, family: Family | None, arch: str | None) -> None:
    if family is not None and info.family != family:
        raise ModelError(f"{info.path} is a {info.family} checkpoint ({info.arch}), not {family}")
    if arch is not None and info.arch != arch:
        raise ModelError(f"{info.path} holds {info.arch}, not {arch}")


def identify(path: Path, *, family: Family | None = None, arch: str | None = None) -> CheckpointInfo:
    """Read ``path`` and say what it holds; ModelError if it is not a YOLO-NAS or SAM checkpoint,
    or not of ``family``/``arch`` when given. Checks the head's shape only (see ``check_architecture``)."""
    info = _describe(read_checkpoint(Path(path)), Path(path))
    _expect(info, family, arch)
    return info


def architecture_state(family: Family, arch: str, num_classes: int | None) -> dict[str, Any]:
    """The state dict (meta tensors: shapes, no data) of a freshly built ``arch``."""
    import torch

    with torch.device("meta"):
        if family == "yolo_nas":
            from stream.models.yolo_nas import build_network

            net = build_network(arch, num_classes or 80, random_seed=None)
        else:
            from stream.models.sam import ARCHS, _make_sam

            net = _make_sam(ARCHS[arch])
    return dict(net.state_dict())


def check_architecture(
    path: Path, *, family: Family | None = None, arch: str | None = None
) -> CheckpointInfo:
    """``identify``, then every key and tensor shape against the architecture itself.

    Raises ModelError in one line: the first mis-shaped tensor (key, expected, got), missing
    and unexpected keys. A YOLO-NAS with another class count than 80 is checked as a
    fine-tuned model with that many classes.
    """
    from stream.models.checkpoint import check_state_shapes

    path = Path(path)
    ckpt = read_checkpoint(path)
    info = _describe(ckpt, path)
    _expect(info, family, arch)
    expected = architecture_state(info.family, info.arch, info.num_classes)
    label = info.arch if info.num_classes in (None, 80) else f"{info.arch} with {info.num_classes} classes"
    check_state_shapes(expected, ckpt.state, arch=label, source=str(path))
    return info
