"""The capacity trial of ``stream bench pipeline``: how many frames per second the pipeline
can process on this machine, against the naive loop's.

The paced trial plays live sources at their own frame rate: its delivered frames/s can
never exceed streams × fps, so against a naive loop that runs unpaced it shows whether
we keep up, not how much faster we are. The capacity trial plays the same sources (the
same clip, scene or pattern, the same models and settings, ``--record`` included)
**not live**: a file, synthetic or pattern source with ``live: false`` is read as fast as
the pipeline takes its frames (``stream.capture``: a full downstream queue blocks the
send, a ring slot is reused only once its frame is released), so no frame is dropped
and every stage works as hard as the slowest one lets it — what the naive loop, which
also takes the next frame as soon as it is done with the last, measures of itself.

Figures (``capacity_*`` in the summary; ``--capacity-frames`` frames per stream):

- ``capacity_fps``: (P - 1) / (t_last - t_first), P the frames published (all streams),
  t_first and t_last the publish times of the first and last of them. The rate at which
  frames come out once the pipeline is full: the first frame's trip through the
  stages (filling the pipeline: a latency, not a throughput) is left out, as the naive
  loop's first frame (its warm-up) is. P - 1: the number of intervals between P frames
  (the run summary's own fps, ``stream.summary``, is defined the same way).
- ``capacity_seconds``: t_last - t_first; ``capacity_frames``: frames asked per stream;
  ``capacity_frames_published``: P (= streams × frames asked when nothing is lost);
  ``capacity_drops`` (and ``capacity_drop_reasons``): frames dropped anywhere in the
  pipeline, as the run's summary counts them (a file never loses one: anything but 0 is
  a fault).
- ``capacity_cpu_ms_per_frame`` (and ``…_per_stage``): CPU time of every worker process
  from the sample when every stage was ready (before the first frame is read) to the
  sample when the last frame was published, over the frames published in between; so
  no frame's work is left out, and idle time costs nothing.
- ``ratio_capacity`` and ``ratio_capacity_without_annotate``: capacity_fps over the naive
  loop's frames/s, with and without its drawing step (our pipeline draws only for a
  sink that shows pixels: ``--record``).
"""

from __future__ import annotations

import math
from typing import Any

from stream.bench.probes import PublishProbe, Resources


def figures(n: int, frames: int, summary: Any, probe: PublishProbe, res: Resources) -> dict[str, Any]:
    """The ``capacity_*`` summary keys of a non-live run of ``n`` streams × ``frames``."""
    published = sum(st.frames for st in probe.stats.values())
    firsts = [st.first_publish_ns for st in probe.stats.values() if st.frames]
    lasts = [st.last_publish_ns for st in probe.stats.values() if st.frames]
    seconds = (max(lasts) - min(firsts)) / 1e9 if firsts else 0.0
    reasons: dict[str, int] = {}
    for s in summary.sources:  # the run's own count (stream.summary), lost in flight included
        for reason, k in s.dropped.items():
            reasons[reason] = reasons.get(reason, 0) + k
    cpu_s = res.cpu_cores * res.window_s
    per_frame = cpu_s * 1000.0 / res.published if res.published else float("nan")
    per_stage = {
        k: v * res.window_s * 1000.0 / res.published if res.published else float("nan")
        for k, v in res.per_stage.items()
    }
    return {
        "capacity_streams": n,
        "capacity_frames": frames,
        "capacity_frames_published": published,
        "capacity_drops": sum(reasons.values()),
        "capacity_drop_reasons": reasons,
        "capacity_seconds": seconds,
        "capacity_fps": (published - 1) / seconds if published > 1 and seconds > 0 else float("nan"),
        "capacity_cpu_ms_per_frame": per_frame,
        "capacity_cpu_ms_per_frame_per_stage": per_stage,
        "capacity_host_cpu_util": res.host_cpu_util,
    }


def ratios(summary: dict[str, Any]) -> dict[str, float]:
    """ratio_capacity[_without_annotate] from a summary holding capacity_fps and the naive figures."""
    ours = summary.get("capacity_fps", float("nan"))
    out = {}
    for key, naive in (("ratio_capacity", "naive_fps"), ("ratio_capacity_without_annotate", "naive_fps_without_annotate")):
        fps = summary.get(naive, float("nan"))
        out[key] = ours / fps if fps and not math.isnan(fps) else float("nan")
    # CPU per frame, naive without drawing / ours unpaced: how many times less CPU a frame costs us
    cpu = summary.get("capacity_cpu_ms_per_frame", float("nan"))
    naive_cpu = summary.get("naive_cpu_ms_per_frame_without_annotate", float("nan"))
    out["capacity_cpu_ratio_without_annotate"] = naive_cpu / cpu if cpu and not math.isnan(cpu) else float("nan")
    return out
