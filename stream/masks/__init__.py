"""Masks between SAM keyframes: which tracks need SAM now (``keyframes``), how a
mask follows its track meanwhile (``propagate``), the bounded per-source state
(``store``), compact crops (``crop``) and COCO RLE for publishing (``rle``).

This package needs no torch; the SAM model itself is ``stream.models.sam``.
"""

from __future__ import annotations

from stream.masks.crop import MaskCrop
from stream.masks.keyframes import KeyframePolicy, KeyframeReason, TrackView
from stream.masks.propagate import DenseFlow, FlowField, PropagationMethod, SoftCrop
from stream.masks.store import FramePlan, MaskStore, StoreStats, TrackMask

__all__ = [
    "DenseFlow",
    "FlowField",
    "FramePlan",
    "KeyframePolicy",
    "KeyframeReason",
    "MaskCrop",
    "MaskStore",
    "PropagationMethod",
    "SoftCrop",
    "StoreStats",
    "TrackMask",
    "TrackView",
]
