"""A stage that forwards frames unchanged: the unit of the transport benchmark
and the middle stage of backbone tests. With ``touch_pixels`` it reads one
byte per row, so a shared-memory frame is really mapped and read."""

from __future__ import annotations

import time

from stream.config import Config, PassthroughConfig
from stream.messages import Frame
from stream.stage import StageBase


class PassthroughStage(StageBase):
    name = "passthrough"

    def __init__(self, params: PassthroughConfig) -> None:
        self.params = params
        self.checksum = 0

    def process(self, frame: Frame) -> Frame | None:
        if self.params.touch_pixels and frame.image is not None:
            self.checksum ^= int(frame.image[:, 0, 0].sum())
        if self.params.delay_ms:
            time.sleep(self.params.delay_ms / 1000.0)
        return frame.evolve()


def build(config: Config) -> PassthroughStage:
    return PassthroughStage(config.passthrough)
