"""SAM: the real segment-anything classes at a tiny size, against SamPredictor, on CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

from stream.errors import ModelError, WeightsError
from stream.masks.geometry import expand_rect
from stream.masks.keyframes import KeyframePolicy
from stream.masks.rle import decode, encode
from stream.masks.store import MaskStore
from stream.models.sam import ARCHS, MaskBatch, SamSegmenter, build_sam, checkpoint_arch
from stream.sources.synthetic import SyntheticParams, SyntheticScene


@pytest.fixture(scope="module")
def tiny() -> SamSegmenter:
    return SamSegmenter(build_sam("tiny", None, random_seed=0, device="cpu"))


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return SyntheticScene(SyntheticParams(width=320, height=240, seed=1)).render(0)


def _reference(seg: SamSegmenter, image: np.ndarray, boxes: np.ndarray, multimask: bool):  # type: ignore[no-untyped-def]
    predictor = SamPredictor(seg.model.sam)
    predictor.set_image(image, image_format="BGR")
    tb = predictor.transform.apply_boxes_torch(torch.as_tensor(boxes, device=predictor.device), image.shape[:2])
    masks, iou, _ = predictor.predict_torch(None, None, tb, multimask_output=multimask)
    return masks.cpu().numpy(), iou.float().cpu().numpy()


@pytest.mark.parametrize("multimask", [False, True])
def test_masks_equal_sam_predictor(tiny: SamSegmenter, image: np.ndarray, multimask: bool) -> None:
    boxes = np.array([[20, 30, 120, 150], [150, 40, 300, 220], [0, 0, 60, 50]], np.float32)
    batch = tiny.segment(tiny.embed(image), boxes, multimask=multimask)
    ref_masks, ref_iou = _reference(tiny, image, boxes, multimask)
    best = ref_iou.argmax(axis=1)
    np.testing.assert_allclose(batch.scores, ref_iou[np.arange(3), best], atol=1e-4)
    for k, box in enumerate(boxes):
        x0, y0, x1, y1 = expand_rect(box, tiny.crop_margin, 4.0, 240, 320)
        ours = batch.crops[k].to_full(240, 320)[y0:y1, x0:x1]
        ref = ref_masks[k, best[k]][y0:y1, x0:x1]
        assert ref.any()
        assert np.mean(ours != ref) < 0.002, f"box {k}: masks differ on {np.mean(ours != ref):.2%} of pixels"
        # the crop is tight and lies inside the grown box
        cx0, cy0, cx1, cy1 = batch.crops[k].rect
        assert x0 <= cx0 and y0 <= cy0 and cx1 <= x1 and cy1 <= y1


def test_torch_resize_close_to_predictor(image: np.ndarray) -> None:
    seg = SamSegmenter(build_sam("tiny", None, random_seed=0, device="cpu"), resize="torch")
    boxes = np.array([[20, 30, 120, 150], [150, 40, 300, 220]], np.float32)
    batch = seg.segment(seg.embed(image), boxes)
    ref_masks, _ = _reference(seg, image, boxes, False)
    for k, box in enumerate(boxes):
        x0, y0, x1, y1 = expand_rect(box, seg.crop_margin, 4.0, 240, 320)
        ours = batch.crops[k].to_full(240, 320)[y0:y1, x0:x1]
        assert np.mean(ours != ref_masks[k, 0][y0:y1, x0:x1]) < 0.02


def test_bad_boxes_are_clipped_or_skipped(tiny: SamSegmenter, image: np.ndarray) -> None:
    emb = tiny.embed(image)
    before = (tiny.stats.boxes_clipped, tiny.stats.boxes_skipped)
    boxes = np.array(
        [
            [-50, -50, 60, 60],  # partly outside: clipped
            [400, 300, 500, 400],  # wholly outside
            [10, 10, 10, 80],  # zero width
            [np.nan, 0, 20, 20],  # not finite
            [50, 50, 40, 40],  # inverted
        ],
        np.float32,
    )
    batch = tiny.segment(emb, boxes)
    assert batch.valid.tolist() == [True, False, False, False, False]
    np.testing.assert_array_equal(batch.boxes[0], [0, 0, 60, 60])
    assert all(c.is_empty for c in batch.crops[1:]) and not batch.scores[1:].any()
    assert tiny.stats.boxes_clipped - before[0] == 1
    assert tiny.stats.boxes_skipped - before[1] == 4
    empty = tiny.segment(emb, np.zeros((0, 4), np.float32))
    assert isinstance(empty, MaskBatch) and empty.crops == [] and empty.valid.shape == (0,)


def test_one_decoder_call_for_all_boxes(tiny: SamSegmenter, image: np.ndarray) -> None:
    emb = tiny.embed(image)
    calls = tiny.stats.decoder_calls
    batch = tiny.segment(emb, np.tile(np.array([[20, 30, 120, 150]], np.float32), (40, 1)))
    assert tiny.stats.decoder_calls == calls + 1
    assert len(batch.crops) == 40 and batch.low_res_logits is not None
    assert tuple(batch.low_res_logits.shape) == (40, 64, 64)  # 4 × (256 / 16)


def test_checkpoint_round_trip(tmp_path: Path, image: np.ndarray) -> None:
    model = build_sam("tiny", None, random_seed=3, device="cpu")
    path = tmp_path / "sam_tiny.pth"
    torch.save(model.sam.state_dict(), path)
    loaded = build_sam("tiny", path, device="cpu")
    assert not loaded.random_weights and model.random_weights
    boxes = np.array([[20, 30, 120, 150]], np.float32)
    a = SamSegmenter(model).segment(SamSegmenter(model).embed(image), boxes)
    seg = SamSegmenter(loaded)
    b = seg.segment(seg.embed(image), boxes)
    np.testing.assert_array_equal(a.crops[0].mask, b.crops[0].mask)


def test_checkpoint_of_another_size_names_both(tmp_path: Path) -> None:
    # The shapes a vit_l checkpoint has where the check looks (a real one is 1.2 GB).
    spec = ARCHS["vit_l"]
    state = {
        "image_encoder.patch_embed.proj.weight": torch.zeros(spec.embed_dim, 3, 16, 16),
        "image_encoder.pos_embed": torch.zeros(1, 64, 64, spec.embed_dim),
    }
    state.update({f"image_encoder.blocks.{i}.norm1.weight": torch.zeros(1) for i in range(spec.depth)})
    assert checkpoint_arch(state) == spec
    path = tmp_path / "sam_vit_l.pth"
    torch.save(state, path)
    with pytest.raises(ModelError) as err:
        build_sam("vit_b", path, device="cpu")
    message = str(err.value)
    assert "vit_l" in message and "vit_b" in message and str(path) in message


def test_not_a_sam_checkpoint_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(ModelError, match="not a SAM checkpoint"):
        build_sam("tiny", path, device="cpu")
    with pytest.raises(WeightsError):
        build_sam("tiny", tmp_path / "missing.pth", device="cpu")


def test_random_weights_must_be_asked_for() -> None:
    with pytest.raises(ModelError, match="no checkpoint"):
        build_sam("tiny", None, device="cpu")
    with pytest.raises(ModelError, match="unknown SAM arch"):
        build_sam("vit_x", None, random_seed=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error shown without CUDA")
def test_cuda_without_cuda_is_a_clear_error() -> None:
    with pytest.raises(ModelError, match="no CUDA device"):
        build_sam("tiny", None, random_seed=0, device="cuda")


def test_segmentation_core_on_a_synthetic_video(tiny: SamSegmenter) -> None:
    """Keyframe policy → one embedding + one decoder call per keyframe frame → store → RLE."""
    scene = SyntheticScene(SyntheticParams(width=320, height=240, frames=12, seed=2))
    store = MaskStore("cam0", KeyframePolicy(interval=5, drift_iou=0.5), method="flow")
    emb0, dec0 = tiny.stats.embeddings, tiny.stats.decoder_calls
    keyframe_frames = 0
    for seq in range(12):
        image, gt = scene.render_with_truth(seq)
        store.begin_frame(240, 320, image, seq=seq)
        plan = store.plan(gt.ids, gt.boxes)
        if plan.keyframe.size:
            keyframe_frames += 1
            batch = tiny.segment(tiny.embed(image), plan.boxes[plan.keyframe])
            store.update_keyframe(
                gt.ids[plan.keyframe], plan.boxes[plan.keyframe], batch.crops, batch.scores, plan.reasons
            )
        store.propagate(gt.ids[plan.propagate], plan.boxes[plan.propagate])
        for track_id in gt.ids.tolist():
            held = store.get(track_id)
            assert held is not None
            assert (held.kind == "keyframe") == (held.age == 0)
    assert keyframe_frames >= 3  # frame 0, interval 5, 10
    assert tiny.stats.embeddings - emb0 == keyframe_frames
    assert tiny.stats.decoder_calls - dec0 == keyframe_frames
    some = next(iter(store))
    full = store.full_mask(some.track_id)
    assert full is not None and full.shape == (240, 320)
    np.testing.assert_array_equal(decode(encode(full)), full)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_vit_b_on_cuda_bf16_matches_fp32() -> None:
    model = build_sam("vit_b", None, random_seed=0, device="cuda")
    assert model.autocast_dtype is torch.bfloat16
    seg = SamSegmenter(model)
    image = SyntheticScene(SyntheticParams(width=1280, height=720, seed=0)).render(0)
    # 16 distinct boxes over the frame (4 x 4 grid, varied sizes), every one checked
    boxes = np.array(
        [[60 + 300 * (k % 4), 40 + 170 * (k // 4), 60 + 300 * (k % 4) + 150 + 20 * k, 40 + 170 * (k // 4) + 120 + 5 * k]
         for k in range(16)],
        np.float32,
    )
    batch = seg.segment(seg.embed(image), boxes)
    assert batch.valid.all()
    # the reference gets the same prompts: the segmenter clips boxes 11-15 to the frame and
    # SamPredictor would not. Run on the CPU with bf16 autocast and torch resizing (the CUDA
    # path), unclipped reference prompts gave box 15 a mask IoU of 0.74; clipped ones, >= 0.917
    # for every box
    ref_masks, ref_iou = _reference(seg, image, batch.boxes, False)  # SamPredictor: fp32
    assert len(batch.crops) == 16 and np.abs(batch.scores - ref_iou[:, 0]).max() < 0.05
    for k in range(16):
        x0, y0, x1, y1 = expand_rect(boxes[k], seg.crop_margin, 4.0, 720, 1280)
        ours = batch.crops[k].to_full(720, 1280)[y0:y1, x0:x1]
        ref = ref_masks[k, 0][y0:y1, x0:x1]
        assert ours.any() and ref.any(), f"box {k}: a mask is empty (bf16 {ours.sum()} px, fp32 {ref.sum()} px)"
        iou = np.logical_and(ours, ref).sum() / np.logical_or(ours, ref).sum()
        assert iou >= 0.9, f"box {k}: bf16 vs fp32 mask IoU {iou:.3f} < 0.9"
