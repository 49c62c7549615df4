"""``stream predict`` as a user runs it: a folder of images (with a corrupt one and a text
file) through YOLO-NAS and a tiny SAM with random weights (nothing here is a detection)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from stream.eval.coco_data import COCO80_TO_91
from stream.masks.rle import decode
from stream.render import BANNER_BGR
from stream.sources.synthetic import SyntheticParams, SyntheticScene
from tests.conftest import run_stream

pytestmark = pytest.mark.timeout(600)

FORMATS = ("jpg", "png", "webp", "tif")


def image_folder(root: Path) -> dict[str, tuple[int, int]]:
    """Four images of different sizes and formats, a corrupt JPEG and a text file; returns name → (H, W)."""
    root.mkdir(parents=True)
    sizes = {}
    for i, ext in enumerate(FORMATS):
        w, h = 160 + 32 * i, 120 + 8 * i
        cv2.imwrite(
            str(root / f"img{i}.{ext}"), SyntheticScene(SyntheticParams(width=w, height=h, seed=i)).render(3)
        )
        sizes[f"img{i}.{ext}"] = (h, w)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(64)))
    (root / "notes.txt").write_text("not an image\n")
    return sizes


def test_folder_gives_annotated_images_and_coco_json_with_a_mask_per_detection(tmp_path, artifact_cache):
    sizes = image_folder(tmp_path / "in")
    out = tmp_path / "out"
    r = run_stream(
        "predict", str(tmp_path / "in"), "--out", str(out), "--random-weights", "--sam-model", "tiny",
        "--input-size", "320", "--device", "cpu", "--conf", "0.01", "--max-det", "3", "--batch", "3",
        env={"STREAM_CACHE": str(artifact_cache)}, timeout=540,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "broken.jpg" in r.stderr and "not a readable image" in r.stderr
    assert "notes.txt: not an image file (.txt)" in r.stdout
    assert "processed 4 image(s)" in r.stdout and "RANDOM WEIGHTS" in r.stdout

    for name, (h, w) in sizes.items():
        picture = cv2.imread(str(out / name))
        assert picture is not None and picture.shape == (h, w, 3), name
        bottom = picture[-3:, : w // 8].reshape(-1, 3).mean(axis=0)  # the RANDOM WEIGHTS banner
        assert np.abs(bottom - np.array(BANNER_BGR)).max() < 30, (name, bottom)
    assert not (out / "broken.jpg").exists()

    dataset = json.loads((out / "predictions.json").read_text())
    assert dataset["info"]["random_weights"] is True and dataset["info"]["sam_model"] == "tiny"
    assert sorted(im["file_name"] for im in dataset["images"]) == sorted(sizes)
    gt = COCO(str(out / "predictions.json"))
    res = gt.loadRes(str(out / "results.json"))  # pycocotools accepts the results file
    results = json.loads((out / "results.json").read_text())
    assert len(res.anns) == len(results) > 0
    by_id = {im["id"]: im for im in dataset["images"]}
    for det in results:
        im = by_id[det["image_id"]]
        assert det["segmentation"]["size"] == [im["height"], im["width"]]  # every detection has a mask
        assert decode(det["segmentation"]).shape == (im["height"], im["width"])
        x, y, bw, bh = det["bbox"]
        assert 0 <= x and 0 <= y and x + bw <= im["width"] + 0.01 and y + bh <= im["height"] + 0.01
    assert {d["category_id"] for d in results} <= set(COCO80_TO_91)  # COCO's official category ids
    per_image = [sum(1 for d in results if d["image_id"] == i) for i in by_id]
    assert all(n <= 3 for n in per_image)


def test_missing_weights_stop_before_any_work_and_name_the_command(tmp_path):
    image_folder(tmp_path / "in")
    out = tmp_path / "out"
    r = run_stream(
        "predict", str(tmp_path / "in"), "--out", str(out), env={"STREAM_CACHE": str(tmp_path / "c")}
    )
    assert r.returncode == 5
    assert "stream weights pull yolo_nas_s" in r.stderr and "--random-weights" in r.stderr
    assert not out.exists()
    r = run_stream(
        "predict", str(tmp_path / "in"), "--preprocess", "gama=2", "--random-weights", "--out", str(out)
    )
    assert r.returncode == 2 and "preprocess.gama: unknown key" in r.stderr


def test_nothing_readable_is_an_error_naming_the_files(tmp_path, artifact_cache):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    r = run_stream(
        "predict", str(tmp_path / "in"), str(tmp_path / "missing.jpg"), "--out", str(tmp_path / "out"),
        "--random-weights", "--no-masks", "--input-size", "320", "--device", "cpu",
        env={"STREAM_CACHE": str(artifact_cache)}, timeout=540,
    )  # fmt: skip
    assert r.returncode == 3
    assert "missing.jpg: no such file or folder" in r.stderr
    assert "no image could be read" in r.stderr and "a.png" in r.stderr


def test_each_detection_gets_its_own_mask_in_the_coco_files(tmp_path):
    """In-process, with a stand-in detector and segmenter: two objects, two separate RLEs."""
    from stream.masks.crop import MaskCrop
    from stream.models.detections import Detections
    from stream.predict import ImagePredictor, run_predict

    class Detector:
        class_names = ("person", "car")
        random_weights = False

        def detect(self, images):
            boxes = np.array([[10, 10, 30, 40], [50, 20, 90, 60]], np.float32)
            return [
                Detections(boxes, np.array([0.9, 0.8], np.float32), np.array([0, 1], np.int32))
                for _ in images
            ]

    class Segmenter:
        class model:  # noqa: N801 — the attribute SamSegmenter has
            random_weights = False

        def embed(self, image):
            return image.shape

        def segment(self, embedding, boxes):
            class Batch:
                crops = [MaskCrop(np.ones((30, 20), bool), 10, 10), MaskCrop(np.ones((40, 40), bool), 50, 20)]

            return Batch()

    src = tmp_path / "a.png"
    cv2.imwrite(str(src), np.full((80, 120, 3), 128, np.uint8))
    report = run_predict([src], tmp_path / "out", ImagePredictor(Detector(), Segmenter()), progress=False)
    assert (report.processed, report.detections, report.masks, report.random_weights) == (1, 2, 2, False)
    results = json.loads(report.results_path.read_text())
    first, second = (decode(r["segmentation"]) for r in results)
    assert first.sum() == 600 and first[10:40, 10:30].all()
    assert second.sum() == 1600 and second[20:60, 50:90].all() and not (first & second).any()
    assert [r["category_id"] for r in results] == [1, 2]  # not the 80 COCO classes: ids 1…N
    assert [r["bbox"] for r in results] == [[10, 10, 20, 30], [50, 20, 40, 40]]
    dataset = json.loads(report.predictions_path.read_text())
    assert [a["area"] for a in dataset["annotations"]] == [600, 1600]
    assert dataset["info"]["random_weights"] is False
    picture = cv2.imread(str(tmp_path / "out" / "a.png"))
    assert picture.shape == (80, 120, 3) and not (picture == 128).all()  # masks and boxes drawn
