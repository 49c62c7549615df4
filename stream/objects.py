"""The objects a frame carries, as named arrays on the wire, and a typed view of them.

Array names (all optional; N objects, parallel):
    boxes      (N,4) float32  XYXY, source-image pixels
    scores     (N,)  float32  detector confidence in [0, 1]
    class_ids  (N,)  int32    index into the detector's class names
    track_ids  (N,)  int64    ≥ 1, unique per source for the whole run (track stage)
    mask_boxes (N,4) int32    XYXY crop of each mask in pixels (x2, y2 exclusive)
    mask_bits  (B,)  uint8    every crop's bool mask, np.packbits'ed, concatenated
    mask_offsets (N+1,) int64 start of object i's bits in mask_bits (bytes)
    mask_kind  (N,)  uint8    0 = keyframe (fresh from SAM), 1 = propagated, 2 = none (empty crop)
    mask_age   (N,)  int32    frames since the mask's keyframe

Masks stay box crops from the segment stage to the sinks; ``full_mask``
expands one to frame size only where a sink needs it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from stream.config import Config

MASK_KINDS = ("keyframe", "propagated", "none")  # mask_kind codes 0, 1, 2


@dataclass(frozen=True)
class ObjectMasks:
    crop_boxes: np.ndarray  # (N,4) int32
    bits: np.ndarray  # (B,) uint8
    offsets: np.ndarray  # (N+1,) int64
    kind: np.ndarray  # (N,) uint8
    age: np.ndarray  # (N,) int32

    @classmethod
    def pack(cls, crops: Sequence[np.ndarray], crop_boxes: np.ndarray, kind: np.ndarray, age: np.ndarray) -> ObjectMasks:
        """crops[i]: (h_i, w_i) bool with h_i = y2-y1, w_i = x2-x1 of crop_boxes[i]."""
        packed = [np.packbits(np.ascontiguousarray(c, dtype=bool).ravel()) for c in crops]
        offsets = np.zeros(len(packed) + 1, np.int64)
        if packed:
            offsets[1:] = np.cumsum([p.size for p in packed])
        bits = np.concatenate(packed) if packed else np.zeros(0, np.uint8)
        return cls(np.asarray(crop_boxes, np.int32).reshape(-1, 4), bits, offsets,
                   np.asarray(kind, np.uint8), np.asarray(age, np.int32))

    def __len__(self) -> int:
        return int(self.crop_boxes.shape[0])

    def crop(self, i: int) -> np.ndarray:
        """(h, w) bool mask of object i inside its crop box."""
        x1, y1, x2, y2 = (int(v) for v in self.crop_boxes[i])
        h, w = max(0, y2 - y1), max(0, x2 - x1)
        raw = self.bits[self.offsets[i]:self.offsets[i + 1]]
        return np.unpackbits(raw, count=h * w).astype(bool).reshape(h, w)

    def full_mask(self, i: int, height: int, width: int) -> np.ndarray:
        """(height, width) bool mask of object i in frame coordinates."""
        out = np.zeros((height, width), bool)
        x1, y1, x2, y2 = (int(v) for v in self.crop_boxes[i])
        c = self.crop(i)
        xa, ya, xb, yb = max(0, x1), max(0, y1), min(width, x2), min(height, y2)
        if xb > xa and yb > ya:
            out[ya:yb, xa:xb] = c[ya - y1:yb - y1, xa - x1:xb - x1]
        return out

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"mask_boxes": self.crop_boxes, "mask_bits": self.bits, "mask_offsets": self.offsets,
                "mask_kind": self.kind, "mask_age": self.age}


@dataclass(frozen=True)
class FrameObjects:
    """A typed view of the objects in a frame's arrays (see module doc)."""

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    track_ids: np.ndarray | None
    masks: ObjectMasks | None

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> FrameObjects:
        boxes = arrays.get("boxes", np.zeros((0, 4), np.float32))
        n = boxes.shape[0]
        masks = None
        if "mask_boxes" in arrays:
            masks = ObjectMasks(arrays["mask_boxes"], arrays["mask_bits"], arrays["mask_offsets"],
                                arrays["mask_kind"], arrays["mask_age"])
        return cls(
            boxes=boxes,
            scores=arrays.get("scores", np.ones(n, np.float32)),
            class_ids=arrays.get("class_ids", np.zeros(n, np.int32)),
            track_ids=arrays.get("track_ids"),
            masks=masks,
        )


# The class names of the official COCO checkpoints, in model output order
# (super_gradients.training.datasets.datasets_conf.COCO_DETECTION_CLASSES_LIST).
COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)


def class_names_of(config: Config) -> tuple[str, ...]:
    """Names indexed by class id for every output (overlay, live view, publish, record):
    ``detect.class_names`` when given, else COCO's 80."""
    names = config.detect.class_names
    return tuple(names) if names else COCO_CLASSES

# The official COCO category ids of the 80 detection classes, in the detector's class order
# (COCO's ids run 1…90 with gaps: ids of classes dropped before release are unused).
COCO80_TO_91: tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28,
    31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55,
    56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84,
    85, 86, 87, 88, 89, 90,
)  # fmt: skip


def category_ids(class_names: Sequence[str]) -> tuple[int, ...]:
    """COCO category ids for a detector's classes: the official ids for the 80 COCO
    classes (so results compare with COCO ground truth as they are), else 1…N."""
    if tuple(class_names) == tuple(COCO_CLASSES):
        return COCO80_TO_91
    return tuple(range(1, len(class_names) + 1))
