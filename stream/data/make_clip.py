"""Re-encode the bundled demo clip from OpenCV's ``vtest.avi``.

Usage::

    python -m stream.data.make_clip /path/to/vtest.avi [--out stream/data/vtest-street.mp4]

Takes the first ``--frames`` frames (default 200, 20 s at 10 fps) of the source,
keeps its size and frame rate, and writes H.264 (libx264, yuv420p, CRF 29,
preset slow, keyframe every 30 frames, +faststart) into an MP4. The output is
deterministic for a given FFmpeg/x264 build (one encoder thread). See
ATTRIBUTION.md for the source and its license.
"""

from __future__ import annotations

import argparse
import logging
from fractions import Fraction
from pathlib import Path

import av

logger = logging.getLogger(__name__)

DEFAULT_OUT = Path(__file__).with_name("vtest-street.mp4")


def make_clip(
    source: Path,
    out: Path,
    *,
    frames: int = 200,
    crf: int = 29,
    preset: str = "slow",
    keyint: int = 30,
) -> int:
    """Decode the first ``frames`` frames of ``source`` and write them to ``out`` as H.264.

    Returns the number of frames written.
    """
    with av.open(str(source)) as inp:
        in_stream = inp.streams.video[0]
        in_stream.thread_type = "AUTO"
        rate = in_stream.average_rate or Fraction(10)
        with av.open(str(out), mode="w", options={"movflags": "+faststart"}) as outp:
            stream = outp.add_stream("libx264", rate=rate)
            stream.width = in_stream.codec_context.width
            stream.height = in_stream.codec_context.height
            stream.pix_fmt = "yuv420p"
            stream.codec_context.thread_count = 1  # deterministic output
            stream.options = {
                "crf": str(crf),
                "preset": preset,
                "g": str(keyint),
                "keyint_min": str(keyint),
                "sc_threshold": "0",
                "bf": "2",
            }
            written = 0
            for frame in inp.decode(in_stream):
                if written >= frames:
                    break
                img = frame.to_ndarray(format="yuv420p")
                new = av.VideoFrame.from_ndarray(img, format="yuv420p")
                new.pts = written
                new.time_base = 1 / Fraction(rate)
                for packet in stream.encode(new):
                    outp.mux(packet)
                written += 1
            for packet in stream.encode(None):
                outp.mux(packet)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="path to OpenCV's vtest.avi (768x576, 10 fps)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output MP4 (default: %(default)s)")
    parser.add_argument("--frames", type=int, default=200, help="frames to keep (default: %(default)s)")
    parser.add_argument("--crf", type=int, default=29, help="x264 CRF (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    n = make_clip(args.source, args.out, frames=args.frames, crf=args.crf)
    logger.info("wrote %d frames to %s (%d bytes)", n, args.out, args.out.stat().st_size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
