"""``stream eval track``: score tracking on MOTChallenge files (MOTA, IDF1, HOTA, IDSW).

With ``--det`` the project's tracker (``SourceTracker``) runs over public
detections and its result is scored; with ``--pred`` an existing MOT-format
result is scored. Metrics come from ``trackers.eval`` (CLEAR, Identity and HOTA
with TrackEval's matching: IoU ≥ 0.5 for CLEAR/Identity, HOTA averaged over
α = 0.05…0.95). Ground truth follows MOTChallenge rules: rows with conf 0 are
ignored, only pedestrians (class 1) are scored, distractor classes are neither
rewarded nor penalised; MOT15-style ground truth without a class column is all
pedestrians. Figures are fractions (MOTA can be negative), IDSW a count.
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from stream.errors import ConfigError, SourceError
from stream.models.tracker import SourceTracker, TrackerParams
from stream.sources.mot import MotSource, MotTable, read_mot, read_seqinfo, write_mot

log = logging.getLogger(__name__)

HELP = "score tracking (MOTA, IDF1, HOTA, IDSW) against MOTChallenge ground truth"

HEADLINE = ("MOTA", "IDF1", "HOTA", "IDSW")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gt", required=True, type=Path, help="ground truth gt.txt (MOTChallenge format)")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--det", type=Path, help="public detections det.txt: run the tracker over them and score it"
    )
    what.add_argument("--pred", type=Path, help="an existing tracking result (MOT format) to score")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument(
        "--write-pred", type=Path, metavar="PATH", help="with --det: write the tracker's result here"
    )
    parser.add_argument("--iou-threshold", type=float, default=0.5, help="IoU for a match in CLEAR/Identity")
    d = TrackerParams()
    t = parser.add_argument_group("tracker (with --det)")
    t.add_argument("--track-activation-threshold", type=float, default=d.track_activation_threshold)
    t.add_argument("--high-conf-threshold", type=float, default=d.high_conf_det_threshold)
    t.add_argument("--minimum-iou-threshold", type=float, default=d.minimum_iou_threshold)
    t.add_argument(
        "--lost-track-buffer",
        type=int,
        default=d.lost_track_buffer,
        help="frames at 30 fps a lost track is kept",
    )
    t.add_argument("--minimum-consecutive-frames", type=int, default=d.minimum_consecutive_frames)
    t.add_argument(
        "--frame-rate",
        type=float,
        default=None,
        help="sequence fps (default: seqinfo.ini beside det/, else 30)",
    )


def track_detections(det_path: Path, params: TrackerParams, last_frame: int = 0) -> MotTable:
    """Run a fresh SourceTracker over a det.txt, frames 1..max(last_frame, det's last frame);
    returns the result as a MotTable (ids ≥ 1, boxes in image pixels)."""
    source = MotSource(det_path, images=False)
    info = source.open()
    tracker = SourceTracker(params, source=str(det_path))
    frames: list[np.ndarray] = []
    ids: list[np.ndarray] = []
    boxes: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    n_frames = max(last_frame, info.frame_count or 0)
    for index in range(n_frames):
        objs = tracker.update(*source.detections(index + 1))
        if len(objs):
            frames.append(np.full(len(objs), index + 1, np.int64))
            ids.append(objs.track_ids)
            boxes.append(objs.boxes.astype(np.float64))
            scores.append(objs.scores.astype(np.float64))
    source.close()
    n = sum(len(f) for f in frames)
    xyxy = np.concatenate(boxes) if boxes else np.zeros((0, 4))
    tlwh = xyxy.copy()
    tlwh[:, 2:] -= tlwh[:, :2]
    return MotTable(
        path=Path("<tracker>"),
        frames=np.concatenate(frames) if frames else np.zeros(0, np.int64),
        ids=np.concatenate(ids) if ids else np.zeros(0, np.int64),
        tlwh=tlwh,
        conf=np.concatenate(scores) if scores else np.zeros(0),
        classes=np.full(n, -1, np.int64),
        visibility=np.full(n, -1.0),
    )


def _write_for_eval(path: Path, table: MotTable, classes: np.ndarray) -> None:
    with path.open("w", encoding="utf-8") as fh:
        rows = zip(
            table.frames.tolist(),
            table.ids.tolist(),
            table.tlwh.tolist(),
            table.conf.tolist(),
            classes.tolist(),
            strict=True,
        )
        for f, i, (x, y, w, h), c, k in rows:
            fh.write(f"{f},{i},{x:.3f},{y:.3f},{w:.3f},{h:.3f},{c:.6g},{k},1\n")
        if not len(table):
            # trackers' reader refuses an empty file; a row with id -1 is an unconfirmed
            # track, which the evaluation drops: an empty result scores as such.
            fh.write("1,-1,0,0,1,1,0,-1,1\n")


def score_mot(gt: MotTable, pred: MotTable, iou_threshold: float = 0.5) -> dict[str, Any]:
    """CLEAR, Identity and HOTA metrics of ``pred`` against ``gt`` (one sequence).

    Returns a flat dict: MOTA, IDF1, HOTA (fractions), IDSW (count) and extras
    (MOTP, IDP, IDR, DetA, AssA, TP, FP, FN, MT, ML, Frag, frames, gt_ids, pred_ids).
    """
    from trackers.eval import evaluate_mot_sequence

    if not len(gt):
        raise SourceError(f"{gt.path}: the ground truth has no rows; nothing to score against")
    # MOT15-style ground truth has no class column: every row is a pedestrian (class 1).
    gt_classes = gt.classes if gt.has_classes() else np.ones(len(gt), np.int64)
    with tempfile.TemporaryDirectory(prefix="stream-eval-") as tmp:
        gt_file, pred_file = Path(tmp) / "gt.txt", Path(tmp) / "pred.txt"
        _write_for_eval(gt_file, gt, gt_classes)
        _write_for_eval(pred_file, pred, np.full(len(pred), -1, np.int64))
        result = evaluate_mot_sequence(
            gt_file, pred_file, metrics=["CLEAR", "HOTA", "Identity"], threshold=iou_threshold
        )
    clear, hota, ident = result.CLEAR, result.HOTA, result.Identity
    if clear is None or hota is None or ident is None:  # requested above; trackers always fills them
        raise SourceError("trackers.eval returned no metrics")
    return {
        "MOTA": clear.MOTA,
        "IDF1": ident.IDF1,
        "HOTA": hota.HOTA,
        "IDSW": clear.IDSW,
        "MOTP": clear.MOTP,
        "IDP": ident.IDP,
        "IDR": ident.IDR,
        "DetA": hota.DetA,
        "AssA": hota.AssA,
        "TP": clear.CLR_TP,
        "FP": clear.CLR_FP,
        "FN": clear.CLR_FN,
        "MT": clear.MT,
        "ML": clear.ML,
        "Frag": clear.Frag,
        "frames": max(gt.last_frame, pred.last_frame),
        "gt_ids": int(np.unique(gt.ids).size),
        "pred_ids": int(np.unique(pred.ids[pred.ids >= 0]).size),
    }


def _params(args: argparse.Namespace) -> TrackerParams:
    frame_rate = args.frame_rate
    if frame_rate is None:
        ini = Path(args.det).parent.parent / "seqinfo.ini"
        frame_rate = (read_seqinfo(ini).frame_rate if ini.is_file() else None) or 30.0
    return TrackerParams(
        track_activation_threshold=args.track_activation_threshold,
        high_conf_det_threshold=args.high_conf_threshold,
        minimum_iou_threshold=args.minimum_iou_threshold,
        lost_track_buffer=args.lost_track_buffer,
        minimum_consecutive_frames=args.minimum_consecutive_frames,
        frame_rate=frame_rate,
    )


def run(args: argparse.Namespace) -> int:
    if not 0.0 < args.iou_threshold <= 1.0:
        raise ConfigError(f"--iou-threshold must be in (0, 1], got {args.iou_threshold}")
    if args.write_pred is not None and args.det is None:
        raise ConfigError("--write-pred needs --det (it writes the tracker's result over those detections)")
    gt = read_mot(args.gt)
    extra: dict[str, Any] = {}
    if args.det is not None:
        params = _params(args)
        pred = track_detections(args.det, params, last_frame=gt.last_frame)
        extra["tracker"] = {k: getattr(params, k) for k in params.__dataclass_fields__}
        if args.write_pred is not None:
            write_mot(args.write_pred, pred.frames, pred.ids, pred.xyxy, pred.conf)
            log.info("wrote %d tracked boxes to %s", len(pred), args.write_pred)
    else:
        pred = read_mot(args.pred)
    scores = score_mot(gt, pred, iou_threshold=args.iou_threshold)
    if args.json:
        from stream.jsonout import emit_json

        emit_json(args, {**scores, **extra})
    else:
        print(_format(scores))
    return 0


def _format(scores: dict[str, Any]) -> str:
    lines = []
    for key, value in scores.items():
        if isinstance(value, float) and key not in ("frames",):
            text = f"{100 * value:.1f} %" if math.isfinite(value) else "nan"
        else:
            text = str(value)
        lines.append(f"{key:<6} {text}")
    return "\n".join(lines)
