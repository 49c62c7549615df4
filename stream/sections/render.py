"""The ``render`` section: what the annotated picture shows (see stream.render)."""

from __future__ import annotations

from pydantic import Field

from stream.sections.base import StrictModel


class RenderConfig(StrictModel):
    """``render`` section. mask_alpha: weight of the mask colour in [0, 1];
    trace_length: box centres kept per track; trace_ttl_frames: a track not seen
    for this many frames of its source loses its trace; font_scale, thickness in
    OpenCV units (pixels for thickness)."""

    boxes: bool = True
    labels: bool = True
    masks: bool = True
    traces: bool = True
    status: bool = True
    mask_alpha: float = Field(default=0.45, ge=0.0, le=1.0)
    trace_length: int = Field(default=32, ge=2, le=1000)
    trace_ttl_frames: int = Field(default=30, ge=1, le=100_000)
    font_scale: float = Field(default=0.5, gt=0, le=5)
    thickness: int = Field(default=2, ge=1, le=20)
