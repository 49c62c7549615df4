"""``stream eval masks``: how well masks survive between keyframes.

On synthetic videos with exact ground truth (stream.sources.synthetic), the
keyframe masks are the ground-truth masks themselves, and the boxes are the
ground-truth boxes; this isolates propagation (box motion, optical flow) and
the keyframe policy from SAM's own quality (there are no real SAM weights on
a test machine). For every published mask (keyframe or propagated) of every
visible object on every frame, the IoU with the ground-truth visible mask is
taken; the report gives the mean by motion kind (rigid, nonrigid), method
(box, flow) and keyframe interval, and compares the adaptive policy (drift
trigger) with fixed intervals at the same number of SAM masks, on the videos
as they are (every object moves) and with half the objects standing still.

``--json`` prints ``{motion: {method: {interval: mean IoU}}}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from stream.errors import ConfigError
from stream.masks.crop import MaskCrop
from stream.masks.keyframes import KeyframePolicy
from stream.masks.propagate import PROPAGATION_METHODS, DenseFlow, PropagationMethod
from stream.masks.store import MaskStore
from stream.sources.synthetic import SyntheticParams, SyntheticScene

log = logging.getLogger(__name__)

HELP = "mask propagation quality on synthetic videos (ground-truth masks at keyframes)"
MOTIONS = ("rigid", "nonrigid")
INTERVALS = (1, 5, 10, 30)


@dataclass(frozen=True)
class TruthFrame:
    """One synthetic frame, compactly: (H, W) uint8 gray pixels and the visible objects.

    ids: (N,) int64; boxes: (N, 4) float32 XYXY source px; masks: N tight MaskCrop; areas: (N,) int64.
    """

    gray: np.ndarray
    ids: np.ndarray
    boxes: np.ndarray
    masks: list[MaskCrop]
    areas: np.ndarray


@dataclass(frozen=True)
class RunResult:
    """mean_iou: over all published masks (track × frame); propagated_iou: over propagated ones only.
    keyframe_masks: SAM masks spent (one per track per keyframe); keyframe_frames: frames that
    needed an image embedding; scored: masks compared with the ground truth."""

    mean_iou: float
    propagated_iou: float
    keyframe_masks: int
    keyframe_frames: int
    scored: int


def synthetic_truth(params: SyntheticParams) -> list[TruthFrame]:
    """Render ``params.frames`` frames once, keeping gray pixels and ground-truth crops."""
    import cv2

    scene = SyntheticScene(params)
    frames = []
    for index in range(params.frames or 0):
        image, gt = scene.render_with_truth(index)
        crops = [MaskCrop.from_full(m) for m in gt.masks]
        frames.append(
            TruthFrame(
                gray=cv2.cvtColor(image, cv2.COLOR_BGR2GRAY),
                ids=gt.ids.astype(np.int64),
                boxes=gt.boxes.astype(np.float32),
                masks=crops,
                areas=np.array([c.area for c in crops], dtype=np.int64),
            )
        )
    return frames


def with_still_objects(still: Sequence[TruthFrame], moving: Sequence[TruthFrame]) -> list[TruthFrame]:
    """Frames with ``still[0]`` frozen on the left and ``moving`` on the right (same height).

    Half the objects never move (parked cars next to traffic): the case an adaptive
    keyframe policy is for, since a fixed interval spends SAM masks on objects
    whose masks cannot go stale. Ids of the still objects are offset by 1,000,000.
    """
    first = still[0]
    offset = first.gray.shape[1]
    shift = np.array([offset, 0, offset, 0], np.float32)
    return [
        TruthFrame(
            gray=np.concatenate([first.gray, m.gray], axis=1),
            ids=np.concatenate([first.ids + 1_000_000, m.ids]),
            boxes=np.concatenate([first.boxes, m.boxes + shift]).astype(np.float32),
            masks=[*first.masks, *(MaskCrop(c.mask, c.x0 + offset, c.y0) for c in m.masks)],
            areas=np.concatenate([first.areas, m.areas]),
        )
        for m in moving
    ]


def mixed_truth(params: SyntheticParams) -> list[TruthFrame]:
    """A video of params' size: its left half still (frame 0 of another seed), its right half moving."""
    left = replace(params, width=params.width // 2, seed=params.seed + 1, frames=1)
    right = replace(params, width=params.width - params.width // 2)
    return with_still_objects(synthetic_truth(left), synthetic_truth(right))


def crop_iou(a: MaskCrop, b: MaskCrop, area_a: int | None = None, area_b: int | None = None) -> float:
    """IoU of two crops in the same frame (1.0 when both are empty)."""
    area_a = a.area if area_a is None else area_a
    area_b = b.area if area_b is None else area_b
    if area_a + area_b == 0:
        return 1.0
    ax0, ay0, ax1, ay1 = a.rect
    bx0, by0, bx1, by1 = b.rect
    x0, y0, x1, y1 = max(ax0, bx0), max(ay0, by0), min(ax1, bx1), min(ay1, by1)
    inter = 0
    if x1 > x0 and y1 > y0:
        sa = a.mask[y0 - ay0 : y1 - ay0, x0 - ax0 : x1 - ax0]
        sb = b.mask[y0 - by0 : y1 - by0, x0 - bx0 : x1 - bx0]
        inter = int(np.count_nonzero(sa & sb))
    return inter / (area_a + area_b - inter)


def run_propagation(
    frames: Sequence[TruthFrame],
    policy: KeyframePolicy,
    method: PropagationMethod,
    *,
    flow: DenseFlow | None = None,
) -> RunResult:
    """Play ``frames`` through a MaskStore whose keyframe masks are the ground truth."""
    return run_many(frames, [(policy, method)], flow=flow)[0]


def run_many(
    frames: Sequence[TruthFrame],
    configs: Sequence[tuple[KeyframePolicy, PropagationMethod]],
    *,
    flow: DenseFlow | None = None,
) -> list[RunResult]:
    """Play ``frames`` through one MaskStore per (policy, method), in lockstep, so
    that the optical flow of each frame is computed once for all of them."""
    if not frames:
        return [RunResult(float("nan"), float("nan"), 0, 0, 0) for _ in configs]
    height, width = frames[0].gray.shape
    need_flow = any(method == "flow" for _, method in configs)
    dense = flow or (DenseFlow() if need_flow else None)
    stores = [MaskStore("eval", policy, method=method, max_masks=1024) for policy, method in configs]
    all_iou: list[list[float]] = [[] for _ in configs]
    prop_iou: list[list[float]] = [[] for _ in configs]
    keyframe_frames = [0] * len(configs)
    prev = None
    for seq, fr in enumerate(frames):
        field = None
        if dense is not None:
            gray, scale = dense.prepare(fr.gray)
            field = dense.backward(gray, prev, scale) if prev is not None else None
            prev = gray
        for k, store in enumerate(stores):
            store.begin_frame(height, width, fr.gray, seq=seq, flow=field)
            plan = store.plan(fr.ids, fr.boxes)
            if plan.keyframe.size:
                keyframe_frames[k] += 1
                store.update_keyframe(
                    fr.ids[plan.keyframe],
                    plan.boxes[plan.keyframe],
                    [fr.masks[i] for i in plan.keyframe],
                    reasons=plan.reasons,
                )
            store.propagate(fr.ids[plan.propagate], plan.boxes[plan.propagate])
            for i, track_id in enumerate(fr.ids.tolist()):
                held = store.get(track_id)
                iou = 0.0 if held is None else crop_iou(held.crop, fr.masks[i], None, int(fr.areas[i]))
                all_iou[k].append(iou)
                if held is not None and held.kind == "propagated":
                    prop_iou[k].append(iou)
    return [
        RunResult(
            mean_iou=float(np.mean(all_iou[k])) if all_iou[k] else float("nan"),
            propagated_iou=float(np.mean(prop_iou[k])) if prop_iou[k] else float("nan"),
            keyframe_masks=store.stats.keyframe_masks,
            keyframe_frames=keyframe_frames[k],
            scored=len(all_iou[k]),
        )
        for k, store in enumerate(stores)
    ]


@dataclass(frozen=True)
class AdaptiveComparison:
    """The adaptive policy against fixed intervals at the same number of SAM masks.

    fixed_iou: the fixed-interval mean IoU at ``adaptive.keyframe_masks`` SAM
    masks, interpolated between the two neighbouring intervals (a fixed schedule
    reaches any point between them by giving some tracks one interval and the
    rest the other). fixed_intervals: those two intervals.
    """

    adaptive: RunResult
    fixed_iou: float
    fixed_intervals: tuple[int, int]
    fixed: dict[int, RunResult]

    @property
    def gain(self) -> float:
        return self.adaptive.mean_iou - self.fixed_iou


def compare_adaptive(
    frames: Sequence[TruthFrame],
    policy: KeyframePolicy,
    method: PropagationMethod = "box",
    *,
    max_interval: int = 60,
    flow: DenseFlow | None = None,
) -> AdaptiveComparison:
    """Run ``policy`` and every fixed interval 1…max_interval (no drift trigger) on the same frames."""
    intervals = list(range(1, max_interval + 1))
    configs = [(policy, method)] + [(KeyframePolicy(interval=n, drift_iou=None), method) for n in intervals]
    results = run_many(frames, configs, flow=flow)
    adaptive, fixed = results[0], dict(zip(intervals, results[1:], strict=True))
    target = adaptive.keyframe_masks
    # Fixed intervals spend fewer masks as the interval grows; find the pair around the target.
    hi = max((n for n in intervals if fixed[n].keyframe_masks >= target), default=1)
    lo = min((n for n in intervals if fixed[n].keyframe_masks <= target), default=max_interval)
    k_hi, k_lo = fixed[hi].keyframe_masks, fixed[lo].keyframe_masks
    if k_hi == k_lo:
        iou = fixed[hi].mean_iou
    else:
        t = float(np.clip((target - k_lo) / (k_hi - k_lo), 0.0, 1.0))
        iou = fixed[lo].mean_iou + t * (fixed[hi].mean_iou - fixed[lo].mean_iou)
    return AdaptiveComparison(adaptive=adaptive, fixed_iou=float(iou), fixed_intervals=(hi, lo), fixed=fixed)


def evaluate(
    frames: Sequence[TruthFrame],
    *,
    methods: Sequence[PropagationMethod] = PROPAGATION_METHODS,
    intervals: Sequence[int] = INTERVALS,
    flow: DenseFlow | None = None,
) -> dict[str, dict[int, RunResult]]:
    """Fixed-interval results by method → interval on one video (all run in lockstep)."""
    configs = [(KeyframePolicy(interval=n, drift_iou=None), m) for m in methods for n in intervals]
    results = iter(run_many(frames, configs, flow=flow))
    return {m: {n: next(results) for n in intervals} for m in methods}


def _csv(kind: type, text: str) -> list:
    return [kind(v) for v in text.split(",") if v.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--width", type=int, default=640, help="frame width, pixels (default 640)")
    parser.add_argument("--height", type=int, default=480, help="frame height, pixels (default 480)")
    parser.add_argument("--frames", type=int, default=150, help="frames per video (default 150)")
    parser.add_argument("--objects", type=int, default=6, help="objects per video (default 6)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--intervals", default="1,5,10,30", help="fixed keyframe intervals, frames")
    parser.add_argument("--methods", default="box,flow", help="propagation methods: box,flow")
    parser.add_argument("--motions", default="rigid,nonrigid", help="motion kinds: rigid,nonrigid")
    parser.add_argument("--drift-iou", type=float, default=0.5, help="drift trigger of the adaptive policy")
    parser.add_argument("--adaptive-interval", type=int, default=30, help="interval of the adaptive policy")
    parser.add_argument(
        "--appearance-ncc",
        type=float,
        default=None,
        help="appearance trigger of the adaptive policy (default off)",
    )
    parser.add_argument("--no-adaptive", action="store_true", help="skip the adaptive-vs-fixed comparison")
    parser.add_argument("--json", action="store_true", help="print {motion: {method: {interval: mean IoU}}}")


def run(args: argparse.Namespace) -> int:
    motions = _csv(str, args.motions)
    methods = _csv(str, args.methods)
    intervals = _csv(int, args.intervals)
    for key, values, allowed in (
        ("--motions", motions, MOTIONS),
        ("--methods", methods, PROPAGATION_METHODS),
    ):
        if not values or any(v not in allowed for v in values):
            raise ConfigError(f"{key} {','.join(values)!r}: choose from {','.join(allowed)}")
    if not intervals or min(intervals) < 1:
        raise ConfigError(f"--intervals {args.intervals!r}: give keyframe intervals ≥ 1, e.g. 1,5,10,30")
    params = SyntheticParams(
        width=args.width, height=args.height, frames=args.frames, num_objects=args.objects, seed=args.seed
    )
    policy = KeyframePolicy(
        interval=args.adaptive_interval, drift_iou=args.drift_iou, appearance_ncc=args.appearance_ncc
    )
    table: dict[str, dict[str, dict[int, RunResult]]] = {}
    adaptive_rows = []
    for motion in motions:
        t0 = time.perf_counter()
        frames = synthetic_truth(replace(params, motion=motion))
        log.info("eval masks: %s video rendered in %.1f s", motion, time.perf_counter() - t0)
        table[motion] = evaluate(frames, methods=methods, intervals=intervals)
        if args.json or args.no_adaptive:
            continue
        for scene, video in (
            ("all moving", frames),
            ("half still", mixed_truth(replace(params, motion=motion))),
        ):
            for method in methods:
                cmp = compare_adaptive(video, policy, method, max_interval=3 * args.adaptive_interval)
                adaptive_rows.append(
                    {
                        "motion": motion,
                        "objects": scene,
                        "method": method,
                        "sam_masks": cmp.adaptive.keyframe_masks,
                        "adaptive_iou": cmp.adaptive.mean_iou,
                        "fixed_iou": cmp.fixed_iou,
                        "fixed_intervals": f"{cmp.fixed_intervals[0]}-{cmp.fixed_intervals[1]}",
                        "gain": cmp.gain,
                    }
                )
    if args.json:
        out = {
            mo: {me: {str(n): round(r.mean_iou, 4) for n, r in by.items()} for me, by in t.items()}
            for mo, t in table.items()
        }
        print(json.dumps(out))
        return 0
    from stream.report import format_table

    rows = [
        {
            "motion": mo,
            "method": me,
            "interval": n,
            "mean_iou": r.mean_iou,
            "propagated_iou": r.propagated_iou,
            "sam_masks": r.keyframe_masks,
            "embeddings": r.keyframe_frames,
            "masks_scored": r.scored,
        }
        for mo, t in table.items()
        for me, by in t.items()
        for n, r in by.items()
    ]
    print(
        f"synthetic {args.width}x{args.height}, {args.frames} frames, {args.objects} objects, seed {args.seed}"
    )
    print("keyframe masks = ground-truth masks, boxes = ground-truth boxes: propagation only, no SAM")
    print(format_table(rows))
    if adaptive_rows:
        print(
            f"\nadaptive policy (interval {args.adaptive_interval}, drift IoU < {args.drift_iou}, "
            f"appearance NCC < {args.appearance_ncc}) "
            "vs fixed intervals at equal SAM masks (interpolated between the two neighbouring intervals)"
        )
        print(format_table(adaptive_rows))
    return 0
