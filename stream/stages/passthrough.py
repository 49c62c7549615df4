"""A stage that forwards frames unchanged: the unit of the transport benchmark
and the middle stage of backbone tests. With ``touch_pixels`` it reads one
byte per row, so a shared-memory frame is really mapped and read. ``drop_every`` and
``check_stamp`` exercise the drop paths and pixel integrity (see PassthroughConfig)."""

from __future__ import annotations

import time

from stream.config import Config
from stream.messages import Frame
from stream.sections.stages import PassthroughConfig
from stream.sources.pattern import read_seq
from stream.stage import StageBase


class PassthroughStage(StageBase):
    name = "passthrough"

    def __init__(self, params: PassthroughConfig) -> None:
        self.params = params
        self.checksum = 0

    def process(self, frame: Frame) -> Frame | None:
        p = self.params
        if p.touch_pixels and frame.image is not None:
            self.checksum ^= int(frame.image[:, 0, 0].sum())
        if p.check_stamp:
            stamped = read_seq(frame.image) if frame.image is not None else None
            if stamped != frame.seq % 2**32:
                raise ValueError(f"the pixels carry seq {stamped}, not the frame's own: another frame's buffer")
        if p.delay_ms:
            time.sleep(p.delay_ms / 1000.0)
        if p.drop_every and frame.seq % p.drop_every == 0:
            return None
        return frame.evolve()


def build(config: Config) -> PassthroughStage:
    if config.passthrough.load_s:
        time.sleep(config.passthrough.load_s)  # as a model load would: before the stage runner exists
    return PassthroughStage(config.passthrough)
