"""Preprocessing (denoise, tone curve, CLAHE), its config parsing and its stage."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from stream.config import load_config
from stream.errors import ConfigError
from stream.messages import Frame, FrameHeader
from stream.models.detections import Detections
from stream.predict import ImagePredictor
from stream.preprocess import (
    PreprocessConfig,
    Preprocessor,
    load_preprocess_file,
    parse_preprocess_options,
    tone_curve,
)
from stream.sources.synthetic import SyntheticParams, SyntheticScene
from stream.stages.preprocess import PreprocessStage, build, preflight


def clean_frame(width: int = 192, height: int = 144) -> np.ndarray:
    return SyntheticScene(SyntheticParams(width=width, height=height, num_objects=4)).render(5)


def low_light(clean: np.ndarray, sigma: float = 12.0, seed: int = 0) -> np.ndarray:
    """The clean frame at a quarter of its brightness plus Gaussian sensor noise."""
    rng = np.random.default_rng(seed)
    dark = clean.astype(np.float32) * 0.25 + rng.normal(0, sigma, clean.shape)
    return np.clip(np.rint(dark), 0, 255).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / mse)


def luma(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_BGR2YCrCb)[..., 0].astype(np.float64)


def assert_gamma_applied(out: np.ndarray, src: np.ndarray, gamma: float) -> None:
    """out's luma is 255·(Y/255)^(1/gamma) of src's luma, computed here, not by the code under test
    (within the rounding of the YCrCb round trip)."""
    expected = 255.0 * np.power(luma(src) / 255.0, 1.0 / gamma)
    err = np.abs(luma(out) - expected)
    assert err.mean() < 1.0 and np.percentile(err, 99) <= 3.0, (err.mean(), np.percentile(err, 99))
    assert luma(out).mean() > luma(src).mean() + 20  # and it really changed the picture


def test_off_by_default_returns_an_equal_copy_and_leaves_the_input_alone():
    img = clean_frame()
    img.flags.writeable = False  # frames from shared memory are read-only views
    out = Preprocessor()(img)
    assert not PreprocessConfig().enabled
    assert out is not img and np.array_equal(out, img) and out.flags.writeable


def test_gamma_above_one_brightens_the_shadows_and_keeps_white_and_black():
    lut = tone_curve(2.0, 0.0, 1.0)
    assert lut[0] == 0 and lut[255] == 255 and lut[64] == 128  # 255·(64/255)^(1/2) = 127.8
    assert np.all(np.diff(lut.astype(int)) >= 0)
    assert np.array_equal(tone_curve(1.0, 0.0, 1.0), np.arange(256))
    dark = (clean_frame() // 4).astype(np.uint8)
    out = Preprocessor(PreprocessConfig(gamma=2.0))(dark)
    assert luma(out).mean() > luma(dark).mean() + 30


def test_brightness_and_contrast_shift_and_stretch_the_luma():
    img = np.full((32, 32, 3), 100, np.uint8)
    assert luma(Preprocessor(PreprocessConfig(brightness=20))(img)).mean() == pytest.approx(120, abs=1)
    out = luma(Preprocessor(PreprocessConfig(contrast=2.0))(img)).mean()
    assert out == pytest.approx(128 + (100 - 128) * 2, abs=1)


def test_clahe_raises_local_contrast_of_a_flat_low_contrast_image():
    img = (clean_frame() // 8 + 100).astype(np.uint8)  # gray levels squeezed into 100..131
    out = Preprocessor(PreprocessConfig(clahe=True, clahe_clip=4.0))(img)
    assert luma(out).std() > 2 * luma(img).std()


@pytest.mark.parametrize("method", ["nlmeans", "bilateral"])
def test_denoisers_bring_a_noisy_frame_closer_to_the_clean_one(method):
    clean = clean_frame()
    noisy = np.clip(clean.astype(np.float32) + np.random.default_rng(1).normal(0, 15, clean.shape), 0, 255)
    noisy = noisy.astype(np.uint8)
    out = Preprocessor(PreprocessConfig(denoise=method, strength=15))(noisy)
    assert psnr(out, clean) > psnr(noisy, clean) + 2.0


def test_low_light_chain_restores_brightness_and_reduces_noise():
    clean = clean_frame()
    dark = low_light(clean)
    cfg = PreprocessConfig(denoise="bilateral", strength=12, gamma=2.2)
    out = Preprocessor(cfg)(dark)
    assert luma(out).mean() > 1.5 * luma(dark).mean()
    brightened = Preprocessor(PreprocessConfig(gamma=2.2))(dark)
    # the same tone curve without the denoiser leaves more noise: compare to a smoothed reference
    ref = cv2.GaussianBlur(brightened, (0, 0), 3)
    assert np.abs(out.astype(int) - ref).mean() < np.abs(brightened.astype(int) - ref).mean()


@pytest.mark.parametrize("bad", [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 3), np.float32), "x"])
def test_wrong_images_are_refused_with_the_shape(bad):
    with pytest.raises(ValueError, match="uint8 BGR"):
        Preprocessor(PreprocessConfig(gamma=2))(bad)


def test_command_line_options_and_yaml_file(tmp_path: Path):
    cfg = parse_preprocess_options(["denoise=bilateral,strength=9", "gamma=1.8", "clahe=true"])
    assert (cfg.denoise, cfg.strength, cfg.gamma, cfg.clahe) == ("bilateral", 9.0, 1.8, True)
    f = tmp_path / "pre.yaml"
    f.write_text("denoise: nlmeans\ngamma: 1.5\n")
    base = load_preprocess_file(f)
    assert parse_preprocess_options(["gamma=2"], base).model_dump() == {**base.model_dump(), "gamma": 2.0}
    with pytest.raises(ConfigError, match="preprocess.gama: unknown key.*gamma"):
        parse_preprocess_options(["gama=2"])
    with pytest.raises(ConfigError, match="preprocess.denoise: 'median' is not allowed"):
        parse_preprocess_options(["denoise=median"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_preprocess_options(["gamma"])
    f.write_text("- gamma\n")
    with pytest.raises(ConfigError, match="pre.yaml.*mapping"):
        load_preprocess_file(f)


class _RecordingDetector:
    class_names = ("thing",)
    random_weights = True

    def __init__(self) -> None:
        self.seen: list[np.ndarray] = []

    def detect(self, images):
        self.seen.extend(images)
        return [
            Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))
            for _ in images
        ]


def test_image_mode_runs_the_preprocessor_before_detection():
    det = _RecordingDetector()
    dark = low_light(clean_frame())
    pre = Preprocessor(PreprocessConfig(gamma=2.0))
    (result,) = ImagePredictor(det, None, pre)([dark])
    assert_gamma_applied(det.seen[0], dark, 2.0)  # the detector saw the processed pixels
    assert np.array_equal(result.image, det.seen[0])


# --- the stage -----------------------------------------------------------------------------------


def pipeline_config(tmp_path: Path, section: dict, pipeline: list[str] | None = None):
    import yaml

    cfg = {
        "sources": [{"id": "night", "type": "synthetic"}, {"id": "day", "type": "synthetic"}],
        "pipeline": pipeline or ["preprocess", "passthrough"],
        "preprocess": section,
    }
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return load_config(p)


def frame(source: str, image: np.ndarray) -> Frame:
    return Frame(FrameHeader(source, 0, 0, (1, 30), 0), image=image)


def test_stage_applies_each_sources_settings_and_passes_others_through(tmp_path: Path):
    stage = build(pipeline_config(tmp_path, {"night": {"gamma": 2.0}}))
    img = low_light(clean_frame())
    img.flags.writeable = False
    out = stage.process(frame("night", img))
    assert out is not None and out.image is not img
    assert_gamma_applied(out.image, img, 2.0)
    same = stage.process(frame("day", img))
    assert same is not None and same.image is img


def test_stage_star_entry_covers_sources_without_their_own():
    stage = PreprocessStage({}, Preprocessor(PreprocessConfig(brightness=30)))
    out = stage.process(frame("any", np.full((8, 8, 3), 50, np.uint8)))
    assert out is not None and luma(out.image).mean() == pytest.approx(80, abs=1)


def test_stage_config_errors_name_the_key(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"preprocess\.cam9: no source has this id \(sources: night, day"):
        preflight(pipeline_config(tmp_path, {"cam9": {"gamma": 2}}))
    with pytest.raises(ConfigError, match=r"preprocess\.night\.gamma"):
        preflight(pipeline_config(tmp_path, {"night": {"gamma": -1}}))
    with pytest.raises(ConfigError, match="'preprocess' must be the first stage"):
        preflight(pipeline_config(tmp_path, {"night": {"gamma": 2}}, ["passthrough", "preprocess"]))
