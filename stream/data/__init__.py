"""Data shipped with the package: a short real street clip for demos and tests.

``vtest-street.mp4``: the first 200 frames (20 s) of OpenCV's sample ``vtest.avi``
(768×576, 10 fps, people walking), re-encoded to H.264 by ``make_clip.py``.
Source and license: ``ATTRIBUTION.md`` next to it.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from stream.errors import SourceError

DEMO_CLIP = "vtest-street.mp4"


def demo_clip_path() -> Path:
    """Path of the bundled demo clip (768×576, 10 fps, 200 frames, H.264 in MP4).

    Raises SourceError when the package was installed without its data files
    (or zipped, so the clip is not a file on disk).
    """
    clip = resources.files(__name__) / DEMO_CLIP
    if not isinstance(clip, Path) or not clip.is_file():
        raise SourceError(
            f"the demo clip {DEMO_CLIP} is missing from the installed package stream.data ({clip}); "
            "reinstall stream from a full source checkout"
        )
    return clip
