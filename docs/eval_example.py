"""Regenerate docs/eval-example-pr.png and docs/eval-example-confusion.png.

A synthetic, labelled YOLO dataset (``SyntheticScene`` frames, three shape classes)
and SIMULATED predictions made from its ground truth (boxes jittered, some missed,
some given the wrong class, some false positives; scores drawn so that good boxes
tend to score higher), scored by ``stream eval detect --pred``. No model runs: the
pictures show what the plots look like, not any detector's accuracy.

    .venv/bin/python docs/eval_example.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import yaml

from stream.sources.synthetic import CLASS_NAMES, SyntheticParams, SyntheticScene

DOCS = Path(__file__).resolve().parent
W, H, FRAMES = 640, 360, 60


def main() -> None:
    rng = np.random.default_rng(7)
    scene = SyntheticScene(SyntheticParams(width=W, height=H, num_objects=6, seed=3))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "synthetic"
        (root / "images").mkdir(parents=True)
        (root / "labels").mkdir()
        (root / "data.yaml").write_text(yaml.safe_dump({"names": list(CLASS_NAMES)}))
        images, anns = [], []
        for i in range(FRAMES):
            img, gt = scene.render_with_truth(i * 5)
            name = f"frame{i:03d}.png"
            cv2.imwrite(str(root / "images" / name), img)
            rows = []
            for (x0, y0, x1, y1), cls in zip(gt.boxes.tolist(), gt.class_ids.tolist(), strict=True):
                rows.append(
                    f"{cls} {(x0 + x1) / 2 / W:.6f} {(y0 + y1) / 2 / H:.6f} {(x1 - x0) / W:.6f} {(y1 - y0) / H:.6f}"
                )
                if rng.random() < 0.12:  # missed
                    continue
                w, h = x1 - x0, y1 - y0
                jitter = rng.normal(0, 0.08, 4) * [w, h, w, h]
                box = [x0 + jitter[0], y0 + jitter[1], w + jitter[2], h + jitter[3]]
                label = cls if rng.random() > 0.08 else int(rng.integers(0, len(CLASS_NAMES)))
                score = float(
                    np.clip(0.9 - 2.0 * np.abs(jitter).mean() / max(w, h) + rng.normal(0, 0.1), 0.02, 1)
                )
                anns.append({"image_id": i, "category_id": label, "bbox": box, "score": score})
            for _ in range(rng.poisson(0.8)):  # false positives, mostly low scores
                x, y = rng.uniform(0, W - 60), rng.uniform(0, H - 60)
                anns.append(
                    {
                        "image_id": i,
                        "category_id": int(rng.integers(0, 3)),
                        "bbox": [x, y, rng.uniform(20, 60), rng.uniform(20, 60)],
                        "score": float(rng.beta(1.5, 5)),
                    }
                )
            (root / "labels" / name).with_suffix(".txt").write_text("\n".join(rows) + "\n")
            images.append({"id": i, "file_name": name, "width": W, "height": H})
        pred = Path(tmp) / "predictions.json"
        cats = [{"id": k, "name": n} for k, n in enumerate(CLASS_NAMES)]
        pred.write_text(json.dumps({"images": images, "categories": cats, "annotations": anns}))
        out = Path(tmp) / "out"
        cmd = [
            sys.executable,
            "-m",
            "stream.cli",
            "eval",
            "detect",
            "--data",
            str(root),
            "--pred",
            str(pred),
            "--out",
            str(out),
            "--conf",
            "0.5",
        ]
        subprocess.run(cmd, check=True)
        shutil.copy(out / "pr_curve.png", DOCS / "eval-example-pr.png")
        shutil.copy(out / "confusion_matrix.png", DOCS / "eval-example-confusion.png")
    for name in ("eval-example-pr.png", "eval-example-confusion.png"):
        print(f"{DOCS / name}: {(DOCS / name).stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
