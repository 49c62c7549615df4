"""``stream eval detect`` on labelled images generated here, with predictions whose scores are
known in advance (perfect, half dropped, shifted to a set IoU), in COCO and YOLO format."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from tests.conftest import run_stream

pytestmark = pytest.mark.timeout(600)

NAMES = ("ellipse", "rectangle", "star")
W, H = 640, 480
BOX_W, BOX_H = 100, 80


def truth(n_images: int = 4) -> list[tuple[str, list[tuple[int, float, float, float, float]]]]:
    """Per image (file name, [(class, x, y, w, h) pixels]): 6 boxes, 2 of each class."""
    out = []
    for i in range(n_images):
        boxes = [
            (j % 3, 10.0 + 100 * j, 20.0 + 50 * (j % 2) + 40 * i, float(BOX_W), float(BOX_H))
            for j in range(6)
        ]
        out.append((f"img{i:02d}.png", boxes))
    return out


def draw(boxes) -> np.ndarray:
    img = np.full((H, W, 3), 90, np.uint8)
    for cls, x, y, w, h in boxes:
        cv2.rectangle(
            img, (int(x), int(y)), (int(x + w) - 1, int(y + h) - 1), (60 * cls + 40, 200, 255 - 60 * cls), -1
        )
    return img


def write_coco(root: Path, data) -> Path:
    (root / "images").mkdir(parents=True)
    coco = {
        "images": [],
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(NAMES)],
        "annotations": [],
    }
    k = 1
    for iid, (name, boxes) in enumerate(data, start=1):
        cv2.imwrite(str(root / "images" / name), draw(boxes))
        coco["images"].append({"id": iid, "file_name": name, "width": W, "height": H})
        for cls, x, y, w, h in boxes:
            coco["annotations"].append(
                {
                    "id": k,
                    "image_id": iid,
                    "category_id": cls + 1,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
            k += 1
    ann = root / "instances_val.json"
    ann.write_text(json.dumps(coco))
    return ann


def write_yolo(root: Path, data, names=NAMES) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "data.yaml").write_text(yaml.safe_dump({"names": list(names)}))
    for name, boxes in data:
        cv2.imwrite(str(root / "images" / name), draw(boxes))
        rows = [
            f"{c} {(x + w / 2) / W:.6f} {(y + h / 2) / H:.6f} {w / W:.6f} {h / H:.6f}"
            for c, x, y, w, h in boxes
        ]
        (root / "labels" / name).with_suffix(".txt").write_text("\n".join(rows) + "\n")
    return root


def coco_results(data, keep=lambda k: True, dx: float = 0.0, score=lambda k: 0.9) -> list[dict]:
    """Results in the COCO file's ids (image i+1, category class+1); k counts boxes of a class."""
    out, seen = [], {c: 0 for c in range(len(NAMES))}
    for iid, (_, boxes) in enumerate(data, start=1):
        for cls, x, y, w, h in boxes:
            k = seen[cls]
            seen[cls] += 1
            if keep(k):
                out.append(
                    {"image_id": iid, "category_id": cls + 1, "bbox": [x + dx, y, w, h], "score": score(k)}
                )
    return out


def evaluate(tmp_path: Path, data_arg: Path, results, *extra: str) -> dict:
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps(results))
    out = tmp_path / "out"
    r = run_stream(
        "eval", "detect", "--data", str(data_arg), "--pred", str(pred), "--out", str(out), "--json", *extra
    )
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads(r.stdout)
    assert s == json.loads((out / "summary.json").read_text())
    return s


def test_perfect_predictions_score_one_and_plots_are_drawn(tmp_path):
    data = truth()
    s = evaluate(tmp_path, write_coco(tmp_path / "coco", data), coco_results(data))
    assert s["mAP"] == pytest.approx(1.0) and s["mAP50"] == pytest.approx(1.0)
    assert s["precision"] == 1.0 and s["recall"] == 1.0 and s["tp"] == 24 and s["fp"] == 0
    assert [c["name"] for c in s["per_class"]] == list(NAMES)
    assert all(c["ap"] == pytest.approx(1.0) and c["gt"] == 8 for c in s["per_class"])
    assert s["confusion_matrix"]["counts"] == [[8, 0, 0, 0], [0, 8, 0, 0], [0, 0, 8, 0], [0, 0, 0, 0]]
    assert s["problems"] == [] and s["random_weights"] is False
    for key in ("pr_curve", "confusion_matrix"):
        png = cv2.imread(s["plots"][key])
        assert png is not None and png.shape[0] > 200 and png.shape[1] > 200
        assert png.std() > 20  # lines, text and cells, not a blank canvas
        assert len(np.unique(png.reshape(-1, 3), axis=0)) > 20


def test_dropping_half_the_boxes_of_every_class_halves_recall_and_ap(tmp_path):
    data = truth()
    s = evaluate(tmp_path, write_coco(tmp_path / "coco", data), coco_results(data, keep=lambda k: k % 2 == 0))
    assert s["recall"] == 0.5 and s["precision"] == 1.0
    # COCOeval interpolates precision at 101 recall points 0, .01, … 1: it is 1 up to recall .5
    # (51 points) and 0 beyond, so AP = 51/101 at every IoU threshold.
    assert s["mAP"] == pytest.approx(51 / 101, abs=1e-9) and s["mAP50"] == pytest.approx(51 / 101, abs=1e-9)
    assert all(c["recall"] == 0.5 for c in s["per_class"])
    counts = np.array(s["confusion_matrix"]["counts"])
    assert counts.diagonal()[:3].tolist() == [4, 4, 4] and counts[:3, 3].tolist() == [4, 4, 4]


def test_boxes_shifted_to_iou_061_pass_the_first_three_rungs_of_the_iou_ladder(tmp_path):
    data = truth()
    dx = 24.0  # IoU = (100 - 24) / (100 + 24) = 0.613: a match at IoU .50, .55, .60, not from .65 up
    assert (BOX_W - dx) / (BOX_W + dx) == pytest.approx(0.6129, abs=1e-4)
    s = evaluate(tmp_path, write_coco(tmp_path / "coco", data), coco_results(data, dx=dx))
    assert s["mAP50"] == pytest.approx(1.0)
    assert s["mAP"] == pytest.approx(3 / 10)  # 3 of COCO's 10 IoU thresholds (.50:.05:.95) are met
    assert s["mAP75"] == pytest.approx(0.0)


def test_precision_and_recall_follow_the_threshold(tmp_path):
    data = truth()
    results = coco_results(data, score=lambda k: 0.9 if k < 6 else 0.1)  # 6 of 8 per class score high
    results.append(
        {"image_id": 1, "category_id": 1, "bbox": [500, 380, 60, 60], "score": 0.95}
    )  # a false one
    s = evaluate(tmp_path, write_coco(tmp_path / "coco", data), results, "--conf", "0.5")
    assert s["recall"] == pytest.approx(18 / 24) and s["precision"] == pytest.approx(18 / 19)
    assert s["fp"] == 1 and s["confusion_matrix"]["counts"][3][0] == 1  # background row, predicted class 0


def test_yolo_format_with_bad_items_reports_each_and_scores_the_rest(tmp_path):
    data = truth()
    root = write_yolo(tmp_path / "yolo", data)
    (root / "labels" / "img00.txt").open("a").write("7 0.5 0.5 0.1 0.1\n")  # unknown class
    (root / "labels" / "img01.txt").open("a").write("1 0.98 0.5 0.1 0.1\n")  # crosses the right edge
    (root / "labels" / "ghost.txt").write_text("0 0.5 0.5 0.1 0.1\n")  # no image
    (root / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")  # unreadable
    (root / "labels" / "broken.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    # predictions in predict's dataset form: matched by file name and class name
    images = [{"id": 100 + i, "file_name": name, "width": W, "height": H} for i, (name, _) in enumerate(data)]
    cats = [{"id": 50 + i, "name": n} for i, n in enumerate(NAMES)]
    anns = [
        {"id": k, "image_id": 100 + i, "category_id": 50 + c, "bbox": [x, y, w, h], "score": 0.8}
        for k, (i, (c, x, y, w, h)) in enumerate(
            ((i, b) for i, (_, bs) in enumerate(data) for b in bs), start=1
        )
    ]
    anns.append({"image_id": 999, "category_id": 50, "bbox": [1, 1, 5, 5], "score": 0.5})  # unknown image
    pred = tmp_path / "predictions.json"
    pred.write_text(json.dumps({"images": images, "categories": cats, "annotations": anns}))
    out = tmp_path / "out"
    r = run_stream("eval", "detect", "--data", str(root), "--pred", str(pred), "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    problems = "\n".join(s["problems"])
    assert "img00.txt:7: class 7 is not one of the 3 classes in data.yaml" in problems
    assert "img01.txt:7: box" in problems and "extends outside the 640x480 image; clipped" in problems
    assert "ghost.txt: no image of that name" in problems
    assert "broken.png: cannot read the image" in problems
    assert "prediction #24: image_id 999 is not an image of the dataset" in problems
    for needle in ("img00.txt:7", "img01.txt:7", "ghost.txt", "broken.png", "#24"):
        assert needle in r.stderr  # each item is also logged as it is found
    assert s["images"] == 4 and s["format"] == "yolo"
    # the clipped extra box on img01 is real ground truth the predictions miss: 24 of 25
    assert s["recall"] == pytest.approx(24 / 25) and s["precision"] == 1.0
    assert "mAP@[.5:.95]" in r.stdout and "5 input problem(s)" in r.stdout


def test_empty_or_missing_datasets_fail_with_a_message_naming_them(tmp_path):
    root = tmp_path / "empty"
    (root / "images").mkdir(parents=True)
    (root / "classes.txt").write_text("a\nb\n")
    r = run_stream("eval", "detect", "--data", str(root), "--pred", str(tmp_path / "p.json"))
    assert r.returncode == 3 and f"{root / 'images'} holds no images" in r.stderr
    r = run_stream(
        "eval", "detect", "--data", str(tmp_path / "nope.json"), "--pred", str(tmp_path / "p.json")
    )
    assert r.returncode == 3 and "nope.json does not exist" in r.stderr


def test_detector_needs_weights_or_random_weights(tmp_path, artifact_cache):
    from stream.objects import COCO_CLASSES

    data = truth(2)
    root = write_yolo(tmp_path / "yolo", data, names=COCO_CLASSES)  # the detector's classes, matched by name
    r = run_stream("eval", "detect", "--data", str(root), env={"STREAM_CACHE": str(tmp_path / "empty-cache")})
    assert r.returncode == 5 and "stream weights pull yolo_nas_s" in r.stderr
    out = tmp_path / "out"
    r = run_stream("eval", "detect", "--data", str(root), "--random-weights", "--input-size", "320",
                   "--device", "cpu", "--max-det", "20", "--out", str(out),
                   env={"STREAM_CACHE": str(artifact_cache)}, timeout=540)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["random_weights"] is True and "RANDOM WEIGHTS" in r.stdout
    results = json.loads((out / "results.json").read_text())
    assert 0 < len(results) <= 2 * 20 and s["predictions"] == len(results)
    assert {r["category_id"] for r in results} <= set(range(80))  # the YOLO class indices
    assert all(cv2.imread(p) is not None for p in s["plots"].values())
