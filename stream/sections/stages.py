"""Sections of the model stages: ``detect``, ``track``, ``segment``, ``passthrough``.

``device`` is checked for its form here ('auto', 'cpu', 'cuda', 'cuda:N'); whether
that device exists is checked when the stage starts (it needs torch), and a device
that is not there stops the run at once (DeviceError, exit 7).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from stream.sections.base import StrictModel

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def _check_device(v: str) -> str:
    if not _DEVICE.match(v):
        raise ValueError("must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return v


Device = Annotated[str, AfterValidator(_check_device)]


class PassthroughConfig(StrictModel):
    """A stage that forwards frames unchanged (benchmarks, tests). touch_pixels reads
    one byte per row so the pixels are really accessed; delay_ms simulates work;
    drop_every: drop (filter out) the frames whose seq is a multiple of it (1: all), as
    a filtering stage would; check_stamp: with a pattern source (at least 256 px wide),
    check that the pixels carry the frame's own seq (a mismatch is a counted error, the
    frame dropped); load_s: seconds its build takes, as a model load would (start-up tests)."""

    touch_pixels: bool = True
    delay_ms: float = Field(0.0, ge=0)
    drop_every: int = Field(0, ge=0)
    check_stamp: bool = False
    load_s: float = Field(0.0, ge=0)


class DetectConfig(StrictModel):
    """model: YOLO-NAS size. weights: a registry name (``stream weights list``) or a
    checkpoint path; default the official COCO weights of ``model``. class_names:
    for a fine-tuned checkpoint (default COCO). classes: keep only these names.
    runtime: 'auto' (ONNX Runtime on a CPU, TorchScript on CUDA), 'torchscript' or
    'onnxruntime' (CPU only; see stream.models.yolo_nas_onnx).
    threads: intra-op threads of the detect process (default: half the cores, at
    least 1; see stream.threads)."""

    model: Literal["yolo_nas_s", "yolo_nas_m", "yolo_nas_l"] = "yolo_nas_s"
    weights: str | None = None
    num_classes: int | None = Field(None, ge=1)
    class_names: list[str] | None = None
    input_size: int = Field(640, ge=64, le=2048, multiple_of=32)
    conf: float | None = Field(None, ge=0, lt=1)
    iou: float | None = Field(None, gt=0, le=1)
    max_detections: int | None = Field(None, ge=1)
    classes: list[str] | None = None
    device: Device = "auto"
    max_batch: int = Field(8, ge=1, le=256)
    max_wait_ms: float = Field(5.0, ge=0)
    random_seed: int = 0
    runtime: Literal["auto", "torchscript", "onnxruntime"] = "auto"
    threads: int | None = Field(None, ge=1, le=1024)


class TrackConfig(StrictModel):
    """ByteTrack's parameters, the one place their rules live (``stream.models.tracker.TrackerParams``
    is checked against this; see it for what each means)."""

    track_activation_threshold: float = Field(0.7, ge=0, le=1)
    high_conf_det_threshold: float = Field(0.6, ge=0, le=1)
    minimum_iou_threshold: float = Field(0.1, ge=0, le=1)
    lost_track_buffer: int = Field(30, ge=0)
    minimum_consecutive_frames: int = Field(2, ge=1)
    frame_rate: float = Field(30.0, gt=0, allow_inf_nan=False)


class SegmentConfig(StrictModel):
    """model: SAM size ('tiny' is a small SAM for tests). weights: registry name
    (e.g. sam_vit_b) or a checkpoint path; default the official weights of ``model``.
    interval: frames between keyframes per track; drift_iou: refresh when the box's
    IoU with its keyframe box falls below this; async_keyframes: run SAM beside the
    stream instead of in it ('auto': for live sources), so a keyframe never holds a
    frame back: its masks arrive up to max_lag_frames later (older ones are discarded)
    and are moved to the boxes of the frame they land on; appearance_ncc: refresh when the box's
    content correlates less than this with the keyframe's; method: propagation between keyframes.
    runtime: SAM's prompt encoder + mask decoder on 'auto' (ONNX Runtime on a CPU, torch
    on CUDA), 'torch' or 'onnxruntime' (CPU only; see stream.models.sam_onnx).
    threads: intra-op threads of the segment process (default: a quarter of the cores, at
    least 1; see stream.threads)."""

    model: Literal["vit_b", "vit_l", "vit_h", "tiny"] = "vit_b"
    weights: str | None = None
    device: Device = "auto"
    interval: int | None = Field(10, ge=1)
    drift_iou: float | None = Field(0.5, gt=0, le=1)
    appearance_ncc: float | None = Field(0.7, ge=-1, le=1)
    method: Literal["box", "flow"] = "box"
    max_masks: int = Field(64, ge=1)
    max_missed: int = Field(30, ge=0)
    multimask: bool = False
    random_seed: int = 0
    async_keyframes: Literal["auto", "always", "never"] = "auto"
    max_lag_frames: int = Field(15, ge=1)
    runtime: Literal["auto", "torch", "onnxruntime"] = "auto"
    threads: int | None = Field(None, ge=1, le=1024)
