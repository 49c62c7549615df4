"""The settings of one source's preprocessing (``preprocess.<source id or "*">``).

The operations themselves are in ``stream.preprocess``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from stream.sections.base import StrictModel


class PreprocessConfig(StrictModel):
    """One source's preprocessing (all off by default).

    denoise: none | nlmeans | bilateral. strength: the denoiser's strength in gray
    levels (about the noise's standard deviation; nlmeans h, bilateral sigmaColor / 2).
    template_window, search_window: nlmeans patch and search sizes in pixels (odd).
    bilateral_diameter: bilateral neighbourhood in pixels. gamma: tone-curve exponent
    (> 1 brightens shadows, 1 = off). brightness: added gray levels (-255…255).
    contrast: gain around mid-gray 128 (1 = off). clahe: equalise contrast locally;
    clahe_clip: CLAHE clip limit; clahe_tiles: grid size (tiles per side).
    """

    denoise: Literal["none", "nlmeans", "bilateral"] = "none"
    strength: float = Field(7.0, gt=0, le=100)
    template_window: int = Field(3, ge=3, le=21)
    search_window: int = Field(7, ge=3, le=41)
    bilateral_diameter: int = Field(5, ge=3, le=25)
    gamma: float = Field(1.0, gt=0.05, le=10)
    brightness: float = Field(0.0, ge=-255, le=255)
    contrast: float = Field(1.0, gt=0, le=10)
    clahe: bool = False
    clahe_clip: float = Field(2.0, gt=0, le=40)
    clahe_tiles: int = Field(8, ge=1, le=64)

    @property
    def enabled(self) -> bool:
        """True when any operation would change pixels."""
        return self.denoise != "none" or self.has_tone_curve or self.clahe

    @property
    def has_tone_curve(self) -> bool:
        return self.gamma != 1.0 or self.brightness != 0.0 or self.contrast != 1.0

    def describe(self) -> str:
        """A one-line summary of what is on, e.g. ``nlmeans(7) gamma 1.8 clahe(2/8)``."""
        parts = []
        if self.denoise != "none":
            parts.append(f"{self.denoise}({self.strength:g})")
        if self.gamma != 1.0:
            parts.append(f"gamma {self.gamma:g}")
        if self.brightness:
            parts.append(f"brightness {self.brightness:+g}")
        if self.contrast != 1.0:
            parts.append(f"contrast {self.contrast:g}")
        if self.clahe:
            parts.append(f"clahe({self.clahe_clip:g}/{self.clahe_tiles})")
        return " ".join(parts) or "off"

