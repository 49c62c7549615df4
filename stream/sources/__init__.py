"""Frame sources and the factory that builds one from its config section.

rtsp / rtmp / http and webcam sources are ``stream.sources.live.LiveSource``: their
``open()`` only validates (a camera that is down must not stop a run from starting) and
returns the ring geometry; ``probe()`` connects and reads one frame (``stream check``)."""

from __future__ import annotations

from pathlib import Path

from stream.config import SourceConfig
from stream.sources.base import Source, SourceFrame, SourceInfo

__all__ = ["Source", "SourceFrame", "SourceInfo", "open_source"]


def open_source(cfg: SourceConfig) -> Source:
    """Build (not yet open) the source described by ``cfg``. Heavy imports stay lazy."""
    if cfg.type == "file":
        from stream.sources.file import FileSource

        return FileSource(Path(cfg.path or ""), live=cfg.live, loop=cfg.loop)
    if cfg.type == "folder":
        from stream.sources.folder import FolderSource

        return FolderSource(Path(cfg.path or ""), fps=cfg.fps or 10.0, live=cfg.live)
    if cfg.type == "synthetic":
        from stream.sources.synthetic import SyntheticParams, SyntheticSource

        s = cfg.synthetic
        return SyntheticSource(SyntheticParams(
            width=s.width, height=s.height, fps=cfg.fps or 30.0, seed=s.seed, num_objects=s.num_objects,
            frames=cfg.max_frames, motion=s.motion, occlusion=s.occlusion, churn=s.churn, live=cfg.live,
        ))
    if cfg.type == "pattern":
        from stream.sources.pattern import PatternSource

        return PatternSource(cfg.synthetic.width, cfg.synthetic.height, fps=cfg.fps or 30.0,
                             frames=cfg.max_frames, live=cfg.live, moving=cfg.synthetic.pattern == "moving")
    if cfg.type == "mot":
        from stream.sources.mot import MotSource

        return MotSource(Path(cfg.path or ""))
    if cfg.type in ("rtsp", "rtmp", "http"):
        from stream.sources.rtsp import network_source

        return network_source(cfg)
    if cfg.type == "webcam":
        from stream.sources.webcam import webcam_source

        return webcam_source(cfg)
    raise AssertionError(f"unhandled source type {cfg.type}")  # config validation rules this out
