"""Intra-op threads of one stage process: torch (OpenMP/MKL), OpenCV and ONNX Runtime.

Every stage is its own process, and by default each native pool sizes itself to the
whole machine: on a 2-core host the detect and segment processes then ran two torch
threads each, four busy threads on two cores, and every stage waited on the others'
(a thread that loses its core mid-operation holds up its whole parallel region).
``detect.threads`` and ``segment.threads`` set the pools of their process at start;
left unset, each stage gets a share of the cores this process may run on
(``available_cores``): detect half of them, segment a quarter, at least one each —
1 and 1 on 2 cores, 8 and 4 on 16. Track and output are single-threaded Python and
numpy work and have no setting.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

SHARES = {"detect": 2, "segment": 4}
"""Stage → divisor of the core count that gives its default thread count."""


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def default_threads(stage: str, cores: int | None = None) -> int:
    """The thread count ``stage`` ('detect' or 'segment') gets when its section leaves
    ``threads`` unset, on ``cores`` cores (default: ``available_cores()``)."""
    n = available_cores() if cores is None else cores
    return max(1, n // SHARES[stage])


def resolve(stage: str, setting: int | None, cores: int | None = None) -> int:
    """``setting`` when given, else the stage's default."""
    return setting if setting is not None else default_threads(stage, cores)


def apply(threads: int) -> None:
    """Size this process's torch and OpenCV pools to ``threads`` (≥ 1). Call it at the start
    of a stage process, before its model runs: the pools are process-wide."""
    import cv2
    import torch

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    log.info("intra-op threads: %d (torch, OpenCV) of %d cores", threads, available_cores())
