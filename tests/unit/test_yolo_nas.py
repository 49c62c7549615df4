"""YOLO-NAS detector core without super-gradients: Detections, letterbox, post-processing,
argument and checkpoint checks, the artifact cache. A tiny fake network with known outputs
stands in for YOLO-NAS so that every expected box can be computed by hand."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from stream.errors import ModelError, WeightsError
from stream.models import yolo_nas_export, yolo_nas_onnx
from stream.models.detections import Detections
from stream.models.yolo_nas import (
    COCO_CLASSES,
    HEAD_CLS_KEY,
    YoloNasModel,
    build_yolo_nas,
    resolve_class_names,
    resolve_device,
)
from stream.models.yolo_nas_detector import YoloNasDetector
from stream.models.yolo_nas_export import (
    artifact_key,
    export_artifact,
    load_yolo_nas,
    read_artifact,
    resolve_runtime,
)
from stream.models.yolo_nas_onnx import OrtModule, onnx_path

NAMES = ("person", "car", "dog")
Boxes = Sequence[Sequence[float]]


class FakeNet(torch.nn.Module):
    """Returns fixed (boxes (A, 4) in letterbox pixels, scores (A, C)) for every image of the batch."""

    def __init__(self, boxes: Boxes, scores: Boxes) -> None:
        super().__init__()
        self.boxes = torch.nn.Buffer(torch.tensor(boxes, dtype=torch.float32))
        self.scores = torch.nn.Buffer(torch.tensor(scores, dtype=torch.float32))
        self.batch_sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not torch.jit.is_tracing():
            self.batch_sizes.append(int(x.shape[0]))
        b = x.shape[0]
        return self.boxes.expand(b, -1, -1), self.scores.expand(b, -1, -1)


def fake_model(boxes: Boxes, scores: Boxes) -> YoloNasModel:
    return YoloNasModel(
        arch="yolo_nas_s",
        module=FakeNet(boxes, scores),
        class_names=NAMES,
        input_size=640,
        device=torch.device("cpu"),
        dtype=torch.float32,
        channels_last=False,
        random_weights=True,
        source="test",
    )


def to_letterbox(box: list[float], scale: float, top: int, left: int) -> list[float]:
    x0, y0, x1, y1 = box
    return [left + x0 * scale, top + y0 * scale, left + x1 * scale, top + y1 * scale]


def frame(h: int, w: int) -> np.ndarray:
    return np.random.default_rng(h * w).integers(0, 255, (h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------- Detections


def test_detections_validation_names_field_and_shapes() -> None:
    ok: dict[str, np.ndarray] = dict(
        boxes=np.zeros((2, 4), np.float32), scores=np.zeros(2, np.float32), class_ids=np.zeros(2, np.int32)
    )
    with pytest.raises(ValueError, match=r"boxes: expected shape \(N, 4\), got \(2, 3\)"):
        Detections(**{**ok, "boxes": np.zeros((2, 3), np.float32)})
    with pytest.raises(ValueError, match=r"scores: expected dtype float32, got float64"):
        Detections(**{**ok, "scores": np.zeros(2)})
    with pytest.raises(ValueError, match=r"class_ids: expected shape \(2,\).*got \(3,\)"):
        Detections(**{**ok, "class_ids": np.zeros(3, np.int32)})
    det = Detections(**ok)
    assert len(det) == 2
    with pytest.raises(ValueError):  # read-only: a stage cannot mutate what another holds
        det.boxes[0, 0] = 1.0


def test_detections_empty_and_supervision() -> None:
    empty = Detections.empty()
    assert len(empty) == 0 and empty.boxes.shape == (0, 4) and empty.class_ids.dtype == np.int32
    det = Detections(
        boxes=np.array([[1, 2, 3, 4]], np.float32),
        scores=np.array([0.5], np.float32),
        class_ids=np.array([2], np.int32),
    )
    sv_det = det.to_supervision(NAMES)
    np.testing.assert_array_equal(sv_det.xyxy, [[1, 2, 3, 4]])
    assert sv_det.confidence is not None and sv_det.confidence.tolist() == [0.5]
    assert sv_det.class_id is not None and sv_det.class_id.tolist() == [2]
    assert list(sv_det.data["class_name"]) == ["dog"]
    assert len(empty.to_supervision()) == 0


# ---------------------------------------------------------------- detector


@pytest.mark.parametrize(
    ("h", "w", "scale", "top", "left"),
    [
        (720, 1280, 636 / 1280, 141, 2),  # landscape: 636 x 358 centred, 141 rows above
        (517, 333, 636 / 517, 2, 115),  # portrait: 410 x 636 centred
        (636, 636, 1.0, 2, 2),  # already the scaled size: no resize, only padding
    ],
)
def test_boxes_come_back_in_source_pixels(h: int, w: int, scale: float, top: int, left: int) -> None:
    src = [100.0, 50.0, 300.0, 250.0]
    model = fake_model([to_letterbox(src, scale, top, left)], [[0.1, 0.9, 0.2]])
    (det,) = YoloNasDetector(model, conf=0.5).detect([frame(h, w)])
    np.testing.assert_allclose(det.boxes, [src], rtol=1e-5)
    assert det.class_ids.tolist() == [1] and det.scores.tolist() == pytest.approx([0.9])


def test_letterbox_pixels_rgb_and_padding() -> None:
    model = fake_model([[0, 0, 1, 1]], [[0.0, 0.0, 0.0]])
    bgr = np.zeros((100, 200, 3), np.uint8)
    bgr[..., 0] = 255  # pure blue in BGR
    x, params = YoloNasDetector(model).preprocess([bgr])
    assert x.shape == (1, 3, 640, 640) and x.dtype == torch.float32
    scale, new_h, new_w, top, left = params[0]
    assert (new_h, new_w, top, left) == (318, 636, 161, 2) and scale == pytest.approx(636 / 200)
    inside = x[0, :, top + 10, left + 10]
    assert inside.tolist() == [0.0, 0.0, 1.0]  # RGB order: blue is the last channel
    assert x[0, :, 0, 0].tolist() == pytest.approx([114 / 255] * 3)  # padding value 114


def test_conf_is_strict_class_aware_nms_and_sorted() -> None:
    boxes = [
        [10, 10, 110, 110],  # person 0.9
        [12, 12, 112, 112],  # person 0.8: IoU > 0.7 with the first -> suppressed
        [12, 12, 112, 112],  # car 0.7: same place, another class -> kept (class-aware)
        [300, 300, 400, 400],  # dog exactly at the threshold -> dropped (scores > conf)
    ]
    scores = [[0.9, 0, 0], [0.8, 0, 0], [0, 0.7, 0], [0, 0, 0.5]]
    (det,) = YoloNasDetector(fake_model(boxes, scores), conf=0.5, iou=0.7).detect([frame(640, 640)])
    assert det.class_ids.tolist() == [0, 1]
    assert det.scores.tolist() == pytest.approx([0.9, 0.7])


def test_one_box_can_carry_several_classes() -> None:
    # predict() for YOLO-NAS decodes every (anchor, class) above conf (multi_label_per_box=True)
    (det,) = YoloNasDetector(fake_model([[10, 10, 50, 50]], [[0.6, 0.7, 0.1]]), conf=0.5).detect(
        [frame(64, 64)]
    )
    assert sorted(det.class_ids.tolist()) == [0, 1]


def test_class_filter_by_name_and_unknown_name() -> None:
    boxes = [[10, 10, 50, 50], [100, 100, 150, 150]]
    model = fake_model(boxes, [[0.9, 0, 0], [0, 0, 0.6]])
    (det,) = YoloNasDetector(model, conf=0.5, classes=["dog"]).detect([frame(640, 640)])
    assert det.class_ids.tolist() == [2]
    with pytest.raises(ModelError, match=r"unknown class name\(s\) \['dgo'\].*did you mean 'dog'.*'person'"):
        YoloNasDetector(model, classes=["dgo"])
    with pytest.raises(ModelError, match="non-empty list"):
        YoloNasDetector(model, classes="dog")  # a string is not a list of names


def test_max_detections_keeps_the_best() -> None:
    boxes = [[i * 60, 0, i * 60 + 50, 50] for i in range(10)]
    scores = [[0.5 + i / 100, 0, 0] for i in range(10)]
    (det,) = YoloNasDetector(fake_model(boxes, scores), conf=0.3, max_detections=3).detect([frame(640, 640)])
    assert det.scores.tolist() == pytest.approx([0.59, 0.58, 0.57])


def test_batch_of_mixed_sizes_is_one_forward() -> None:
    model = fake_model([[10, 10, 50, 50]], [[0.9, 0, 0]])
    dets = YoloNasDetector(model, conf=0.5).detect([frame(480, 640), frame(720, 1280), frame(517, 333)])
    assert model.module.batch_sizes == [3]
    assert [len(d) for d in dets] == [1, 1, 1]
    assert YoloNasDetector(model).detect([]) == []
    rgb_view = frame(480, 640)[..., ::-1]  # negative strides: cv2 cannot take it as is
    assert len(YoloNasDetector(model, conf=0.5).detect([rgb_view])[0]) == 1


def test_zero_detections_is_empty_detections() -> None:
    (det,) = YoloNasDetector(fake_model([[10, 10, 50, 50]], [[0.2, 0.1, 0.3]]), conf=0.5).detect(
        [frame(64, 64)]
    )
    assert len(det) == 0 and det.boxes.shape == (0, 4) and det.scores.dtype == np.float32


def test_boxes_overhanging_the_frame_are_clipped() -> None:
    # frame 640 x 640 -> scale 636/640, offset 2; a box from -20 to 700 in letterbox pixels
    model = fake_model([[-20, -20, 700, 700]], [[0.9, 0, 0]])
    (det,) = YoloNasDetector(model, conf=0.5).detect([frame(640, 640)])
    np.testing.assert_allclose(det.boxes, [[0, 0, 640, 640]])
    (raw,) = YoloNasDetector(model, conf=0.5, clip_boxes=False).detect([frame(640, 640)])
    assert raw.boxes[0, 0] < 0 and raw.boxes[0, 2] > 640


@pytest.mark.parametrize(
    ("bad", "what"),
    [
        (np.zeros((0, 0, 3), np.uint8), r"shape \(0, 0, 3\)"),
        (np.zeros((10, 10, 3), np.float32), "dtype float32"),
        (np.zeros((10, 10), np.uint8), r"shape \(10, 10\)"),
        (np.zeros((10, 10, 4), np.uint8), r"shape \(10, 10, 4\)"),
        ("frame.jpg", "is a str"),
    ],
)
def test_bad_frames_name_their_index(bad: object, what: str) -> None:
    det = YoloNasDetector(fake_model([[10, 10, 50, 50]], [[0.9, 0, 0]]))
    with pytest.raises(ModelError, match=rf"frame 1 of the batch.*{what}"):
        det.detect([frame(64, 64), bad])  # type: ignore[list-item]


def test_threshold_arguments_are_checked() -> None:
    model = fake_model([[10, 10, 50, 50]], [[0.9, 0, 0]])
    with pytest.raises(ModelError, match="conf"):
        YoloNasDetector(model, conf=1.5)
    with pytest.raises(ModelError, match="iou"):
        YoloNasDetector(model, iou=0.0)
    with pytest.raises(ModelError, match="max_detections"):
        YoloNasDetector(model, max_detections=0)


# ---------------------------------------------------------------- building: checks before super-gradients


def test_unknown_arch_lists_allowed() -> None:
    with pytest.raises(ModelError, match="'yolo_nas_xl'.*yolo_nas_s, yolo_nas_m, yolo_nas_l"):
        build_yolo_nas("yolo_nas_xl", random_seed=0)


def test_weights_must_be_given_exactly_once(tmp_path) -> None:
    with pytest.raises(ModelError, match="no weights.*--random-weights"):
        build_yolo_nas("yolo_nas_s")
    with pytest.raises(ModelError, match="pick one"):
        build_yolo_nas("yolo_nas_s", checkpoint=tmp_path / "x.pth", random_seed=0)
    with pytest.raises(ModelError, match="multiple of 32"):
        build_yolo_nas("yolo_nas_s", random_seed=0, input_size=600)


def save_state(path, head_shape: tuple[int, ...]) -> None:
    torch.save(
        {HEAD_CLS_KEY: torch.zeros(head_shape), "heads.head1.cls_pred.bias": torch.zeros(head_shape[0])}, path
    )


def test_checkpoint_for_another_arch_names_both(tmp_path) -> None:
    path = tmp_path / "m.pth"
    save_state(path, (80, 96, 1, 1))  # the first head of yolo_nas_m is 96 channels wide
    with pytest.raises(ModelError, match=r"m\.pth looks like yolo_nas_m.*config says yolo_nas_s"):
        build_yolo_nas("yolo_nas_s", checkpoint=path)


def test_checkpoint_with_another_class_count_names_both(tmp_path) -> None:
    path = tmp_path / "two.pth"
    save_state(path, (2, 64, 1, 1))
    with pytest.raises(
        ModelError, match=r"has 2 classes \(head shape \(2, 64, 1, 1\)\) but detect.num_classes is 80"
    ):
        build_yolo_nas("yolo_nas_s", checkpoint=path, num_classes=80)


def test_checkpoint_that_is_not_yolo_nas(tmp_path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(ModelError, match="not a YOLO-NAS checkpoint"):
        build_yolo_nas("yolo_nas_s", checkpoint=path)


def test_truncated_and_missing_checkpoints(tmp_path) -> None:
    path = tmp_path / "s.pth"
    save_state(path, (80, 64, 1, 1))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated"):
        build_yolo_nas("yolo_nas_s", checkpoint=path)
    with pytest.raises(WeightsError, match="does not exist"):
        build_yolo_nas("yolo_nas_s", checkpoint=tmp_path / "nope.pth")


def test_class_names() -> None:
    assert resolve_class_names(80, None) == COCO_CLASSES and COCO_CLASSES[0] == "person"
    assert resolve_class_names(2, None) == ("class_0", "class_1")
    assert resolve_class_names(2, ["cat", "dog"]) == ("cat", "dog")
    with pytest.raises(ModelError, match="3 class names given.*2 classes"):
        resolve_class_names(2, ["a", "b", "c"])


def test_device_names() -> None:
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ModelError, match="'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no CUDA device"):
            resolve_device("cuda:0")


# ---------------------------------------------------------------- artifact cache


def test_artifact_key_covers_every_field() -> None:
    base = dict(
        weights="random-0",
        arch="yolo_nas_s",
        num_classes=None,
        input_size=640,
        dtype="float32",
        device_type="cpu",
        torch_version="2.5",
        sg_version="3.7.1",
    )
    key = artifact_key(**base)  # type: ignore[arg-type]
    assert key == artifact_key(**base)  # type: ignore[arg-type]
    changed = dict(
        weights="random-1",
        arch="yolo_nas_m",
        num_classes=80,
        input_size=320,
        dtype="float16",
        device_type="cuda",
        torch_version="2.6",
        sg_version="3.7.2",
    )
    for field, value in changed.items():
        assert artifact_key(**{**base, field: value}) != key, field  # type: ignore[arg-type]


def test_artifact_round_trip_and_cache_hit(tmp_path, monkeypatch) -> None:
    boxes = [[10, 10, 110, 110], [300, 300, 400, 400]]
    scores = [[0.9, 0, 0], [0, 0, 0.8]]
    eager = fake_model(boxes, scores)
    built: list[str] = []

    def fake_build(arch: str, **kwargs: object) -> YoloNasModel:
        built.append(arch)
        return eager

    monkeypatch.setattr(yolo_nas_export, "build_yolo_nas", fake_build)
    frames = [frame(480, 640), frame(333, 517)]
    want = YoloNasDetector(eager, conf=0.5).detect(frames)

    first = load_yolo_nas("yolo_nas_s", cache_dir=tmp_path, random_seed=0, device="cpu", class_names=NAMES)
    second = load_yolo_nas("yolo_nas_s", cache_dir=tmp_path, random_seed=0, device="cpu", class_names=NAMES)
    assert built == ["yolo_nas_s"]  # the second call is a cache hit
    assert isinstance(second.module, torch.jit.ScriptModule) and second.random_weights
    for model in (first, second):
        got = YoloNasDetector(model, conf=0.5).detect(frames)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g.boxes, w.boxes)
            np.testing.assert_array_equal(g.class_ids, w.class_ids)

    (artifact,) = tmp_path.glob("yolo_nas_s-640-float32-cpu-*.ts")
    meta = json.loads(artifact.with_suffix(".json").read_text())
    assert meta["num_classes"] == 3 and meta["source"] == "test"
    with pytest.raises(ModelError, match="2 class names given"):
        read_artifact(artifact, device=torch.device("cpu"), class_names=["a", "b"])

    # A damaged artifact is rebuilt rather than failing the run.
    artifact.write_bytes(b"not a torchscript archive")
    with pytest.raises(ModelError, match="delete it to rebuild"):
        read_artifact(artifact, device=torch.device("cpu"))
    load_yolo_nas("yolo_nas_s", cache_dir=tmp_path, random_seed=0, device="cpu", class_names=NAMES)
    assert built == ["yolo_nas_s", "yolo_nas_s"]


def test_export_artifact_writes_atomically(tmp_path) -> None:
    target = tmp_path / "sub" / "a.ts"
    export_artifact(fake_model([[1, 1, 5, 5]], [[0.9, 0, 0]]), target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.json", "a.ts"]  # no temporaries left


# ---------------------------------------------------------------- ONNX Runtime backend


def test_runtime_resolution_and_refusals() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda:0")
    assert resolve_runtime("auto", cpu) == "onnxruntime"
    assert resolve_runtime("auto", cuda) == "torchscript"
    assert resolve_runtime("torchscript", cpu) == "torchscript"
    with pytest.raises(ModelError, match="detect.runtime 'onnxruntime' runs on the CPU only"):
        resolve_runtime("onnxruntime", cuda)
    with pytest.raises(ModelError, match="detect.runtime 'tensorrt' is not one of auto, torchscript"):
        resolve_runtime("tensorrt", cpu)


def test_onnx_artifact_matches_torchscript_is_cached_and_rebuilt_when_damaged(tmp_path, monkeypatch) -> None:
    boxes = [[10, 10, 110, 110], [300, 300, 400, 400], [50, 60, 200, 220]]
    scores = [[0.9, 0, 0], [0, 0, 0.8], [0.1, 0.7, 0.2]]
    monkeypatch.setattr(yolo_nas_export, "build_yolo_nas", lambda arch, **kw: fake_model(boxes, scores))
    exported: list[Path] = []
    real_export = yolo_nas_onnx.export_onnx

    def counting_export(module: object, path: Path, **kw: object) -> None:
        exported.append(path)
        real_export(module, path, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(yolo_nas_onnx, "export_onnx", counting_export)
    kw = dict(cache_dir=tmp_path, random_seed=0, device="cpu", class_names=NAMES)
    frames = [frame(480, 640), frame(333, 517)]
    want = YoloNasDetector(load_yolo_nas("yolo_nas_s", **kw), conf=0.05).detect(frames)  # TorchScript
    for _ in range(2):  # an export, then a cache hit
        model = load_yolo_nas("yolo_nas_s", runtime="onnxruntime", threads=1, **kw)
        assert isinstance(model.module, OrtModule) and model.module.threads == 1
        assert model.class_names == NAMES and model.random_weights and not model.channels_last
        got = YoloNasDetector(model, conf=0.05).detect(frames)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g.boxes, w.boxes, rtol=1e-5)
            np.testing.assert_allclose(g.scores, w.scores, rtol=1e-5)
            np.testing.assert_array_equal(g.class_ids, w.class_ids)
    assert len(exported) == 1
    (ts,) = tmp_path.glob("yolo_nas_s-640-float32-cpu-*[0-9a-f].ts")
    (onnx,) = tmp_path.glob("*.onnx")
    assert onnx == exported[0] == onnx_path(ts) and onnx.stem.startswith(ts.stem + "-ort-")
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".json", ".onnx", ".ts"]  # no temporaries
    onnx.write_bytes(b"not an onnx file")
    with pytest.raises(ModelError, match="delete it to rebuild"):
        OrtModule(onnx, threads=1)
    load_yolo_nas("yolo_nas_s", runtime="onnxruntime", **kw)
    assert len(exported) == 2  # rebuilt rather than failing the run


def test_onnx_artifact_key_follows_the_torchscript_artifact(tmp_path) -> None:
    a, b = tmp_path / "yolo_nas_s-320-float32-cpu-aaaa.ts", tmp_path / "yolo_nas_s-320-float32-cpu-bbbb.ts"
    assert onnx_path(a) != onnx_path(b) and onnx_path(a) == onnx_path(a)
    assert onnx_path(a).suffix == ".onnx" and onnx_path(a).parent == tmp_path
