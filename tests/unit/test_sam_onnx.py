"""segment.runtime 'onnxruntime': SAM's box decoder on ONNX Runtime gives PyTorch's masks.

The small test SAM with seeded random weights (not a released model) on a frame of the
bundled clip; the same embedding goes to both decoders."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from stream.config import load_config
from stream.data import __file__ as data_init
from stream.errors import ConfigError, ModelError
from stream.models.sam import SamSegmenter, build_sam
from stream.models.sam_onnx import OrtSamDecoder, resolve_runtime

CLIP = str(__import__("pathlib").Path(data_init).with_name("vtest-street.mp4"))


@pytest.fixture(scope="module")
def model():  # type: ignore[no-untyped-def]
    return build_sam("tiny", None, random_seed=2, device="cpu")


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    with av.open(CLIP) as c:
        return next(iter(c.decode(video=0))).to_ndarray(format="bgr24")  # type: ignore[no-any-return]


def boxes(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 600, (n, 2))
    return np.concatenate([xy, xy + rng.uniform(20, 160, (n, 2))], 1).astype(np.float32)


def test_onnx_decoder_gives_the_same_masks_for_any_box_count(model, image) -> None:  # type: ignore[no-untyped-def]
    ref, ort = SamSegmenter(model), SamSegmenter(model, decoder=OrtSamDecoder.export(model, threads=1))
    emb = ref.embed(image)
    for n, seed in ((1, 0), (7, 1)):  # the box count is a dynamic axis of the exported graph
        want, got = ref.segment(emb, boxes(n, seed)), ort.segment(emb, boxes(n, seed))
        assert sum(not c.is_empty for c in want.crops) >= n - 1  # masks to compare, not empties
        for w, g in zip(want.crops, got.crops, strict=True):
            assert w.rect == g.rect and np.array_equal(w.mask, g.mask)
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)
        torch.testing.assert_close(got.low_res_logits, want.low_res_logits, atol=1e-4, rtol=1e-4)
    # multimask decoding (3 candidates per box) stays on PyTorch, with the same result
    multi_ref, multi = ref.segment(emb, boxes(3, 2), multimask=True), ort.segment(emb, boxes(3, 2), multimask=True)
    np.testing.assert_array_equal(multi.scores, multi_ref.scores)


def test_runtime_resolution_and_refusals() -> None:
    assert resolve_runtime("auto", torch.device("cpu")) == "onnxruntime"
    assert resolve_runtime("auto", torch.device("cuda:0")) == "torch"
    with pytest.raises(ModelError, match="segment.runtime 'onnxruntime' runs on the CPU only"):
        resolve_runtime("onnxruntime", torch.device("cuda:0"))
    with pytest.raises(ModelError, match="segment.runtime 'tensorrt' is not one of"):
        resolve_runtime("tensorrt", torch.device("cpu"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("segment.runtime=tensorrt", "segment.runtime: 'tensorrt' is not allowed (allowed: 'auto', 'torch' or 'onnxruntime')"),
        ("detect.runtime=onnx", "detect.runtime: 'onnx' is not allowed (allowed: 'auto', 'torchscript' or 'onnxruntime')"),
    ],
)
def test_a_bad_runtime_names_its_dotted_key(override: str, message: str) -> None:
    base = {"sources": [{"id": "cam", "type": "synthetic", "max_frames": 2}], "metrics": {"enabled": False}}
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides=[override], base=base)
    assert message in str(err.value)


def test_decoder_cache_hit_other_weights_and_a_damaged_file(model, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from stream.models import sam_onnx

    exports: list[str] = []
    real = sam_onnx._export_bytes

    def counting(m):  # type: ignore[no-untyped-def]
        exports.append(m.arch.name)
        return real(m)

    monkeypatch.setattr(sam_onnx, "_export_bytes", counting)
    first = OrtSamDecoder.load(model, tmp_path, threads=1)
    OrtSamDecoder.load(model, tmp_path, threads=1)
    assert len(exports) == 1  # the second load is a cache hit
    (path,) = tmp_path.glob("sam_tiny-decoder-*.onnx")
    other = build_sam("tiny", None, random_seed=3, device="cpu")
    OrtSamDecoder.load(other, tmp_path, threads=1)
    assert len(exports) == 2 and len(list(tmp_path.glob("*.onnx"))) == 2  # other weights, another file
    path.write_bytes(b"damaged")
    again = OrtSamDecoder.load(model, tmp_path, threads=1)
    assert len(exports) == 3 and not list(tmp_path.glob("*.tmp"))
    feats, b = torch.randn(1, 256, 16, 16), torch.tensor([[10.0, 10.0, 90.0, 120.0]])
    torch.testing.assert_close(again(feats, b), first(feats, b))
