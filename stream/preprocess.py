"""Optional image preprocessing before detection: denoise, gamma/brightness/contrast, CLAHE.

Off by default. The same ``Preprocessor`` runs in video mode (the ``preprocess``
stage, configured per source) and in image mode (``stream predict --preprocess``),
so a setting tuned on stills behaves the same on a stream.

Everything works on the luma: the BGR image is converted to YCrCb (OpenCV's BT.601
full-range conversion), the Y plane is processed, and the result is converted back.
Chroma (Cr, Cb) is only smoothed by a 5×5 Gaussian when a denoiser is on (low-light
colour noise is mostly chroma). Order: denoise → tone curve → CLAHE, so that the
noise is removed before the tone curve and CLAHE amplify it.

- ``denoise: nlmeans``: OpenCV's fast non-local means on Y
  (``fastNlMeansDenoising``, h = ``strength``, ``template_window`` × ``template_window``
  patches searched in a ``search_window`` × ``search_window`` area). Strong but slow
  (about 0.7 s per 1080p frame with 3/7 on 2 CPU cores; see docs/predict.md): for
  images and low frame rates.
- ``denoise: bilateral``: ``bilateralFilter`` on Y (diameter ``bilateral_diameter`` px,
  sigmaColor = 2 · ``strength`` gray levels, sigmaSpace = the diameter). About 50 ms
  per 1080p frame at diameter 5.
- tone curve (one 256-entry lookup table): y' = (255 · (y/255)^(1/gamma) - 128) · contrast
  + 128 + brightness, clipped to [0, 255]. gamma > 1 brightens the shadows.
- ``clahe``: contrast-limited adaptive histogram equalisation on Y with clip limit
  ``clahe_clip`` on a ``clahe_tiles`` × ``clahe_tiles`` grid.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import yaml

from stream.config import read_yaml_mapping, validate_section
from stream.errors import ConfigError
from stream.sections.preprocess import PreprocessConfig

log = logging.getLogger(__name__)


def _odd(n: int) -> int:
    return n if n % 2 else n + 1


def tone_curve(gamma: float, brightness: float, contrast: float) -> np.ndarray:
    """(256,) uint8 lookup table of the tone curve (see module doc)."""
    y = np.arange(256, dtype=np.float64) / 255.0
    v = 255.0 * np.power(y, 1.0 / gamma)
    v = (v - 128.0) * contrast + 128.0 + brightness
    return np.clip(np.rint(v), 0, 255).astype(np.uint8)


class Preprocessor:
    """Applies a ``PreprocessConfig`` to BGR images. Configured once, called per frame.

    ``__call__(bgr)``: (H, W, 3) uint8 BGR in (any strides, may be read-only) →
    a new (H, W, 3) uint8 BGR array (a copy even when nothing is enabled); the input
    is never modified. Raises ValueError for another shape or dtype.
    """

    def __init__(self, config: PreprocessConfig | None = None) -> None:
        self.config = config or PreprocessConfig()
        c = self.config
        self._lut = tone_curve(c.gamma, c.brightness, c.contrast) if c.has_tone_curve else None
        # CLAHE objects are not thread-safe; one per Preprocessor (one per source / process).
        self._clahe = (
            cv2.createCLAHE(clipLimit=c.clahe_clip, tileGridSize=(c.clahe_tiles, c.clahe_tiles))
            if c.clahe
            else None
        )

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    def __call__(self, bgr: np.ndarray) -> np.ndarray:
        if not isinstance(bgr, np.ndarray) or bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
            shape = getattr(bgr, "shape", None)
            dtype = getattr(bgr, "dtype", type(bgr).__name__)
            raise ValueError(f"preprocess expects an (H, W, 3) uint8 BGR image, got {shape} {dtype}")
        if not self.enabled:
            return np.array(bgr, copy=True, order="C")
        c = self.config
        src = bgr if bgr.flags.c_contiguous else np.ascontiguousarray(bgr)
        ycc = cv2.cvtColor(src, cv2.COLOR_BGR2YCrCb)  # a new array: safe to edit in place
        y = np.ascontiguousarray(ycc[..., 0])
        if c.denoise == "nlmeans":
            y = cv2.fastNlMeansDenoising(
                y, None, h=float(c.strength), templateWindowSize=_odd(c.template_window),
                searchWindowSize=_odd(c.search_window),
            )  # fmt: skip
        elif c.denoise == "bilateral":
            d = c.bilateral_diameter
            y = cv2.bilateralFilter(y, d, sigmaColor=2.0 * c.strength, sigmaSpace=float(d))
        if c.denoise != "none":
            for ch in (1, 2):
                ycc[..., ch] = cv2.GaussianBlur(np.ascontiguousarray(ycc[..., ch]), (5, 5), 0)
        if self._lut is not None:
            y = cv2.LUT(y, self._lut)
        if self._clahe is not None:
            y = self._clahe.apply(y)
        ycc[..., 0] = y
        return cv2.cvtColor(ycc, cv2.COLOR_YCrCb2BGR)


def parse_preprocess_options(
    items: list[str] | tuple[str, ...], base: PreprocessConfig | None = None
) -> PreprocessConfig:
    """``KEY=VALUE[,KEY=VALUE…]`` items (command line) on top of ``base``.

    Values are read as YAML scalars (``clahe=true``, ``gamma=1.8``). Raises ConfigError
    naming the item or the key that is wrong and what is allowed.
    """
    data = base.model_dump() if base is not None else {}
    for item in items:
        for part in (p.strip() for p in item.split(",")):
            if not part:
                continue
            key, sep, raw = part.partition("=")
            if not sep or not key.strip():
                raise ConfigError(
                    f"--preprocess {part!r}: expected KEY=VALUE, e.g. --preprocess denoise=bilateral,gamma=1.5"
                )
            data[key.strip()] = yaml.safe_load(raw) if raw else ""
    return _validate(data, "--preprocess")


def load_preprocess_file(path: Path | str) -> PreprocessConfig:
    """A YAML file holding one ``PreprocessConfig`` mapping (the keys of one source's
    ``preprocess`` section). Raises ConfigError naming the file and the key."""
    data = read_yaml_mapping(path, "preprocess config", ", e.g. 'gamma: 1.8'")
    return _validate(data, str(path))


def _validate(data: dict[str, object], label: str) -> PreprocessConfig:
    try:
        return validate_section(PreprocessConfig, data, "preprocess")
    except ConfigError as exc:
        raise ConfigError(f"{label}: {exc}") from None
