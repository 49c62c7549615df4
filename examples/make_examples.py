"""Regenerate the small example data in examples/eval/ (committed; this script says how it was made).

* ``eval/detect/``: a YOLO-format dataset (``data.yaml``, ``images/``, ``labels/``) of 12
  synthetic 320×180 frames (``stream.sources.synthetic``: three shape classes with exact
  ground truth) and ``predictions.json``: SIMULATED predictions made from that ground truth
  (boxes jittered, some missed, some of the wrong class, a few false positives). No model
  ran: the scores show what the report looks like, not any detector's accuracy.
* ``eval/track/``: ``gt.txt`` (MOTChallenge ground truth of 60 synthetic frames, every
  object a pedestrian-class track) and ``det.txt`` (the same boxes made noisy: 10 % dropped,
  3 px jitter, a few false positives), for ``stream eval track --gt … --det …``.

    python examples/make_examples.py
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import yaml

from stream.sources.synthetic import CLASS_NAMES, SyntheticParams, SyntheticScene

ROOT = Path(__file__).resolve().parent / "eval"
W, H = 320, 180


def detect_set(out: Path, frames: int = 12) -> None:
    rng = np.random.default_rng(7)
    scene = SyntheticScene(SyntheticParams(width=W, height=H, num_objects=5, seed=3))
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(exist_ok=True)
    (out / "data.yaml").write_text(yaml.safe_dump({"names": list(CLASS_NAMES)}))
    images, anns = [], []
    for i in range(frames):
        img, gt = scene.render_with_truth(i * 5)
        name = f"frame{i:03d}.jpg"
        cv2.imwrite(str(out / "images" / name), img, [cv2.IMWRITE_JPEG_QUALITY, 80])
        rows = []
        for (x0, y0, x1, y1), cls in zip(gt.boxes.tolist(), gt.class_ids.tolist(), strict=True):
            rows.append(f"{cls} {(x0 + x1) / 2 / W:.6f} {(y0 + y1) / 2 / H:.6f} {(x1 - x0) / W:.6f} {(y1 - y0) / H:.6f}")
            if rng.random() < 0.12:  # missed
                continue
            w, h = x1 - x0, y1 - y0
            jitter = rng.normal(0, 0.08, 4) * [w, h, w, h]
            box = [round(float(v), 2) for v in (x0 + jitter[0], y0 + jitter[1], w + jitter[2], h + jitter[3])]
            label = cls if rng.random() > 0.08 else int(rng.integers(0, len(CLASS_NAMES)))
            score = float(np.clip(0.9 - 2.0 * np.abs(jitter).mean() / max(w, h) + rng.normal(0, 0.1), 0.02, 1))
            anns.append({"image_id": i, "category_id": label, "bbox": box, "score": round(score, 3)})
        for _ in range(rng.poisson(0.5)):  # false positives, mostly low scores
            x, y = rng.uniform(0, W - 40), rng.uniform(0, H - 40)
            box = [round(float(v), 2) for v in (x, y, rng.uniform(15, 40), rng.uniform(15, 40))]
            anns.append({"image_id": i, "category_id": int(rng.integers(0, 3)), "bbox": box,
                         "score": round(float(rng.beta(1.5, 5)), 3)})  # fmt: skip
        (out / "labels" / name).with_suffix(".txt").write_text("\n".join(rows) + "\n")
        images.append({"id": i, "file_name": name, "width": W, "height": H})
    for k, a in enumerate(anns, start=1):
        a["id"] = k
        a["area"] = round(a["bbox"][2] * a["bbox"][3], 2)
        a["iscrowd"] = 0
    cats = [{"id": k, "name": n} for k, n in enumerate(CLASS_NAMES)]
    info = {"description": "SIMULATED predictions from the ground truth (examples/make_examples.py); no model ran"}
    (out / "predictions.json").write_text(
        json.dumps({"info": info, "images": images, "categories": cats, "annotations": anns}, indent=0)
    )


def track_set(out: Path, frames: int = 60) -> None:
    rng = np.random.default_rng(0)
    scene = SyntheticScene(SyntheticParams(width=640, height=360, num_objects=5, seed=5, churn=False))
    out.mkdir(parents=True, exist_ok=True)
    gt_rows, det_rows = [], []
    for i in range(frames):
        _, gt = scene.render_with_truth(i)
        for tid, (x0, y0, x1, y1), vis in zip(gt.ids.tolist(), gt.boxes.tolist(), gt.visibility.tolist(), strict=True):
            w, h = x1 - x0, y1 - y0
            gt_rows.append(f"{i + 1},{tid},{x0:.1f},{y0:.1f},{w:.1f},{h:.1f},1,1,{vis:.3f}")
            if rng.random() < 0.10:
                continue
            j = rng.normal(0, 3.0, 4)
            score = rng.uniform(0.5, 1.0)
            det_rows.append(f"{i + 1},-1,{x0 + j[0]:.1f},{y0 + j[1]:.1f},{max(4, w + j[2]):.1f},"
                            f"{max(4, h + j[3]):.1f},{score:.3f},-1,-1,-1")  # fmt: skip
        if rng.random() < 0.1:
            x, y = rng.uniform(0, 580), rng.uniform(0, 300)
            det_rows.append(f"{i + 1},-1,{x:.1f},{y:.1f},40.0,60.0,{rng.uniform(0.1, 0.6):.3f},-1,-1,-1")
    (out / "gt.txt").write_text("\n".join(gt_rows) + "\n")
    (out / "det.txt").write_text("\n".join(det_rows) + "\n")


def main() -> None:
    detect_set(ROOT / "detect")
    track_set(ROOT / "track")
    for p in sorted(ROOT.rglob("*")):
        if p.is_file() and p.parent.name not in ("images", "labels"):
            print(f"{p.relative_to(ROOT.parent)}: {p.stat().st_size // 1024} KiB")
    print(f"{len(list((ROOT / 'detect' / 'images').iterdir()))} images")


if __name__ == "__main__":
    main()
