"""Detection metrics on a COCO ground truth: COCOeval numbers, P/R at a threshold, confusion, plots.

- mAP@[.5:.95], mAP@.5, mAP@.75 and the other COCO summary figures come from
  pycocotools' ``COCOeval`` (iouType 'bbox'), unchanged.
- per-class AP: COCOeval's accumulated precision table (101 recall points, area
  'all', 100 detections per image) averaged per class, as COCOeval's own mAP is.
- precision and recall at the confidence threshold ``conf``: from COCOeval's own
  per-image matching at IoU 0.5 (crowd regions and what matches them are ignored),
  counting detections with score ≥ conf: precision = TP / (TP + FP), recall =
  TP / ground-truth boxes, per class and over all objects (0 when undefined).
- confusion matrix at ``conf`` and IoU 0.5: every detection ≥ conf is matched to at
  most one ground-truth box of any class, greedily by descending IoU; rows are the
  true class, columns the predicted one, plus a "background" row (false positives)
  and column (missed boxes). Crowd boxes are left out, and detections that lie on
  a crowd region (IoA ≥ 0.5) are not counted.
- plots (matplotlib, Agg canvas, no pyplot state): a precision–recall curve per
  class at IoU 0.5 with the mean curve and the operating point at ``conf``; the
  confusion matrix normalised per true class, with counts written in when it is small.
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stream.eval.coco_data import quiet_coco

COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
MATCH_IOU = 0.5


@dataclass(frozen=True)
class ClassResult:
    """One category. ap, ap50: NaN when the class has no ground truth. precision /
    recall at the threshold; tp, fp, gt: counts at IoU 0.5."""

    id: int
    name: str
    gt: int
    ap: float
    ap50: float
    precision: float
    recall: float
    tp: int
    fp: int


@dataclass(frozen=True)
class DetectionMetrics:
    """stats: COCOeval's 12 summary figures by name (COCO_STAT_NAMES; -1 where undefined).
    precision_curves: (K, 101) interpolated precision at IoU 0.5 per class (NaN for a class
    without ground truth) over ``recall_points`` (101,). confusion: (K+1, K+1) int64 counts,
    rows true class, columns predicted class, index K = background."""

    stats: dict[str, float]
    classes: list[ClassResult]
    precision: float
    recall: float
    tp: int
    fp: int
    gt: int
    conf: float
    recall_points: np.ndarray
    precision_curves: np.ndarray
    confusion: np.ndarray

    @property
    def map(self) -> float:
        return self.stats["AP"]

    @property
    def map50(self) -> float:
        return self.stats["AP50"]


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def evaluate(gt_dataset: dict[str, Any], results: list[dict[str, Any]], conf: float) -> DetectionMetrics:
    """Score COCO results (image_id, category_id, bbox [x, y, w, h], score) against a COCO
    dataset dict whose ids they use. ``conf``: the threshold of precision, recall and the
    confusion matrix."""
    from pycocotools.cocoeval import COCOeval

    gt = quiet_coco(gt_dataset)
    dets = [
        {**r, "id": i, "area": float(r["bbox"][2]) * float(r["bbox"][3]), "iscrowd": 0}
        for i, r in enumerate(results, start=1)
    ]
    dt = quiet_coco(
        {"images": gt_dataset["images"], "categories": gt_dataset["categories"], "annotations": dets}
    )
    ev = COCOeval(gt, dt, iouType="bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = {n: float(v) for n, v in zip(COCO_STAT_NAMES, ev.stats, strict=True)}
    cat_ids = [int(c) for c in ev.params.catIds]
    names = {c["id"]: c["name"] for c in gt_dataset["categories"]}
    prec = ev.eval["precision"]  # (T, R, K, A, M); -1 where a class has no ground truth
    area_all = list(ev.params.areaRngLbl).index("all")
    counts = _counts_at(ev, conf, area_all)
    classes = []
    curves = np.full((len(cat_ids), prec.shape[1]), np.nan)
    for k, cid in enumerate(cat_ids):
        p = prec[:, :, k, area_all, -1]
        ap = float(p[p > -1].mean()) if (p > -1).any() else math.nan
        p50 = p[0]
        ap50 = float(p50[p50 > -1].mean()) if (p50 > -1).any() else math.nan
        if (p50 > -1).any():
            curves[k] = np.where(p50 > -1, p50, np.nan)
        tp, fp, npos = counts.get(cid, (0, 0, 0))
        classes.append(
            ClassResult(cid, names[cid], npos, ap, ap50, _ratio(tp, tp + fp), _ratio(tp, npos), tp, fp)
        )
    tp = sum(c.tp for c in classes)
    fp = sum(c.fp for c in classes)
    npos = sum(c.gt for c in classes)
    return DetectionMetrics(
        stats=stats, classes=classes, precision=_ratio(tp, tp + fp), recall=_ratio(tp, npos), tp=tp, fp=fp,
        gt=npos, conf=conf, recall_points=np.asarray(ev.params.recThrs, float), precision_curves=curves,
        confusion=confusion_matrix(gt_dataset, results, cat_ids, conf),
    )  # fmt: skip


def _counts_at(ev: Any, conf: float, area_index: int) -> dict[int, tuple[int, int, int]]:
    """Per category (TP, FP, non-ignored GT) at IoU 0.5 and score ≥ conf, from COCOeval's matches."""
    t = int(np.argmin(np.abs(np.asarray(ev.params.iouThrs) - MATCH_IOU)))
    area = ev.params.areaRng[area_index]
    out: dict[int, list[int]] = {}
    for e in ev.evalImgs:
        if e is None or list(e["aRng"]) != list(area):
            continue
        c = out.setdefault(int(e["category_id"]), [0, 0, 0])
        c[2] += int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0))
        scores = np.asarray(e["dtScores"], float)
        if scores.size == 0:
            continue
        keep = (scores >= conf) & ~np.asarray(e["dtIgnore"], bool)[t]
        matched = np.asarray(e["dtMatches"])[t] > 0
        c[0] += int(np.count_nonzero(keep & matched))
        c[1] += int(np.count_nonzero(keep & ~matched))
    return {k: (v[0], v[1], v[2]) for k, v in out.items()}


def confusion_matrix(
    gt_dataset: dict[str, Any], results: list[dict[str, Any]], cat_ids: list[int], conf: float
) -> np.ndarray:
    """(K+1, K+1) int64: rows true class, columns predicted, index K = background (see module doc)."""
    from pycocotools import mask as mask_utils

    index = {c: i for i, c in enumerate(cat_ids)}
    bg = len(cat_ids)
    matrix = np.zeros((bg + 1, bg + 1), np.int64)
    gts: dict[int, list[dict[str, Any]]] = {}
    for a in gt_dataset["annotations"]:
        gts.setdefault(a["image_id"], []).append(a)
    dts: dict[int, list[dict[str, Any]]] = {}
    for r in results:
        if r["score"] >= conf and r["category_id"] in index:
            dts.setdefault(r["image_id"], []).append(r)
    for image_id in {im["id"] for im in gt_dataset["images"]}:
        g_all = [a for a in gts.get(image_id, []) if a["category_id"] in index]
        g = [a for a in g_all if not a.get("iscrowd")]
        crowd = [a for a in g_all if a.get("iscrowd")]
        d = dts.get(image_id, [])
        if crowd and d:
            ioa = mask_utils.iou([r["bbox"] for r in d], [a["bbox"] for a in crowd], [1] * len(crowd))
            d = [
                r
                for r, row in zip(d, np.asarray(ioa).reshape(len(d), -1), strict=True)
                if row.max() < MATCH_IOU
            ]
        used_g: set[int] = set()
        used_d: set[int] = set()
        if g and d:
            iou = np.asarray(mask_utils.iou([r["bbox"] for r in d], [a["bbox"] for a in g], [0] * len(g)))
            iou = iou.reshape(len(d), len(g))
            di, gi = np.nonzero(iou >= MATCH_IOU)
            for k in np.argsort(-iou[di, gi], kind="stable"):
                a, b = int(di[k]), int(gi[k])
                if a in used_d or b in used_g:
                    continue
                used_d.add(a)
                used_g.add(b)
                matrix[index[g[b]["category_id"]], index[d[a]["category_id"]]] += 1
        for b, a in enumerate(g):
            if b not in used_g:
                matrix[index[a["category_id"]], bg] += 1
        for a, r in enumerate(d):
            if a not in used_d:
                matrix[bg, index[r["category_id"]]] += 1
    return matrix


# --- plots ---------------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_pr_curves(m: DetectionMetrics, path: Path, title: str = "") -> Path:
    """PNG of the per-class precision–recall curves at IoU 0.5 (see module doc)."""
    fig = _figure(6.4, 4.8)
    ax = fig.add_subplot(1, 1, 1)
    r = m.recall_points
    shown = [
        (c, m.precision_curves[k])
        for k, c in enumerate(m.classes)
        if not np.isnan(m.precision_curves[k]).all()
    ]
    many = len(shown) > 12
    for c, curve in shown:
        ax.plot(
            r,
            curve,
            linewidth=1.0,
            alpha=0.5 if many else 0.9,
            label=None if many else f"{c.name} {c.ap50:.3f}",
        )
    if shown:
        mean = np.nanmean(np.stack([curve for _, curve in shown]), axis=0)
        ax.plot(r, mean, color="black", linewidth=2.5, label=f"all classes mAP@.5 {m.map50:.3f}")
    ax.plot([m.recall], [m.precision], "o", color="red", markersize=7,
            label=f"conf ≥ {m.conf:g}: P {m.precision:.2f} R {m.recall:.2f}")  # fmt: skip
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title or "precision–recall per class (IoU 0.5)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def plot_confusion(m: DetectionMetrics, path: Path, title: str = "") -> Path:
    """PNG of the confusion matrix, each true-class row normalised to 1, counts written in
    when there are at most 25 classes."""
    labels = [c.name for c in m.classes] + ["background"]
    n = len(labels)
    side = min(14.0, max(5.0, 0.35 * n + 2.5))
    fig = _figure(side, side * 0.85)
    ax = fig.add_subplot(1, 1, 1)
    counts = m.confusion.astype(float)
    rows = counts.sum(axis=1, keepdims=True)
    norm = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ticks = np.arange(n)
    size = 9 if n <= 12 else max(4, int(200 / n))
    ax.set_xticks(ticks, labels, rotation=90, fontsize=size)
    ax.set_yticks(ticks, labels, fontsize=size)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 26:
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    colour = "white" if norm[i, j] > 0.5 else "black"
                    ax.text(
                        j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=size, color=colour
                    )
    ax.set_title(title or f"confusion matrix (conf ≥ {m.conf:g}, IoU 0.5)")
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path
