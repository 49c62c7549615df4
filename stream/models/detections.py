"""``Detections``: one frame's boxes as parallel arrays, validated on construction.

Boxes are (N, 4) float32 XYXY in source-image pixels (x right, y down, origin at
the top-left corner of the frame the detector was given), scores (N,) float32
in [0, 1], class ids (N,) int32 indexing the detector's ``class_names``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import supervision as sv


def _check(name: str, value: Any, dtype: type[np.generic], shape: tuple[int | None, ...]) -> None:
    expected = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
    if not isinstance(value, np.ndarray):
        raise ValueError(
            f"Detections.{name}: expected a numpy array {expected} {np.dtype(dtype).name}, got {type(value).__name__}"
        )
    if value.dtype != dtype:
        raise ValueError(f"Detections.{name}: expected dtype {np.dtype(dtype).name}, got {value.dtype}")
    if value.ndim != len(shape) or any(
        s is not None and s != g for s, g in zip(shape, value.shape, strict=False)
    ):
        raise ValueError(f"Detections.{name}: expected shape {expected}, got {tuple(value.shape)}")


@dataclass(frozen=True, eq=False)
class Detections:
    """Detections in one frame.

    Attributes:
        boxes: (N, 4) float32, XYXY in source-image pixels.
        scores: (N,) float32 confidence in [0, 1].
        class_ids: (N,) int32 index into the detector's class names.

    The arrays are made read-only on construction so that a stage cannot mutate
    what another stage holds.
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray

    def __post_init__(self) -> None:
        _check("boxes", self.boxes, np.float32, (None, 4))
        _check("scores", self.scores, np.float32, (None,))
        _check("class_ids", self.class_ids, np.int32, (None,))
        n = self.boxes.shape[0]
        for name in ("scores", "class_ids"):
            got = getattr(self, name).shape[0]
            if got != n:
                raise ValueError(
                    f"Detections.{name}: expected shape ({n},) to match boxes ({n}, 4), got ({got},)"
                )
        for name in ("boxes", "scores", "class_ids"):
            getattr(self, name).flags.writeable = False

    @classmethod
    def empty(cls) -> Detections:
        """No detections: arrays of length 0 with the documented dtypes."""
        return cls(
            boxes=np.zeros((0, 4), dtype=np.float32),
            scores=np.zeros((0,), dtype=np.float32),
            class_ids=np.zeros((0,), dtype=np.int32),
        )

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def to_supervision(self, class_names: tuple[str, ...] | None = None) -> sv.Detections:
        """As ``supervision.Detections`` (xyxy, confidence, class_id; copies, writeable).

        With ``class_names``, each detection's name is stored under
        ``data["class_name"]`` as supervision's own annotators expect.
        """
        import supervision as sv

        data: dict[str, Any] = {}
        if class_names is not None:
            data["class_name"] = np.array([class_names[i] for i in self.class_ids], dtype=str)
        return sv.Detections(
            xyxy=self.boxes.copy(),
            confidence=self.scores.copy(),
            class_id=self.class_ids.copy(),
            data=data,
        )
