"""Per-stage intra-op threads: ``detect.threads`` / ``segment.threads`` validated with the
dotted key, a default share of the cores, and the pools of the stage process really sized."""

from __future__ import annotations

import pytest

from stream.config import load_config
from stream.errors import ConfigError
from stream.threads import available_cores, default_threads, resolve

BASE = {"sources": [{"id": "cam", "type": "synthetic", "max_frames": 2}], "metrics": {"enabled": False}}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("detect.threads=0", "detect.threads: Input should be greater than or equal to 1 (got 0)"),
        ("segment.threads=-2", "segment.threads: Input should be greater than or equal to 1 (got -2)"),
        ("segment.threads=two", "segment.threads: Input should be a valid integer"),
    ],
)
def test_a_bad_thread_count_names_its_dotted_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides=[override], base=BASE)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_thread_counts_load_and_default_to_unset() -> None:
    cfg = load_config(None, overrides=["detect.threads=3"], base=BASE)
    assert cfg.detect.threads == 3 and cfg.segment.threads is None


@pytest.mark.parametrize(
    ("cores", "detect", "segment"), [(1, 1, 1), (2, 1, 1), (4, 2, 1), (16, 8, 4), (64, 32, 16)]
)
def test_default_share_of_the_cores(cores: int, detect: int, segment: int) -> None:
    assert default_threads("detect", cores) == detect
    assert default_threads("segment", cores) == segment
    assert resolve("detect", 5, cores) == 5  # a setting wins over the default


def test_available_cores_is_this_process_affinity() -> None:
    assert 1 <= available_cores() <= (len(__import__("os").sched_getaffinity(0)))


def test_the_segment_process_runs_with_its_setting(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The stage's build sizes the process's pools (here down to the setting, 1; restored after)."""
    import cv2
    import torch

    from stream.stages import build_stage

    saved = torch.get_num_threads(), cv2.getNumThreads()
    cfg = load_config(None, overrides=["segment.threads=1"], base={
        **BASE, "random_weights": True, "pipeline": ["detect", "track", "segment"], "cache_dir": str(tmp_path),
        "segment": {"model": "tiny", "device": "cpu"}})
    try:
        torch.set_num_threads(2)
        cv2.setNumThreads(2)
        build_stage("segment", cfg)
        assert (torch.get_num_threads(), cv2.getNumThreads()) == (1, 1)
    finally:
        torch.set_num_threads(saved[0])
        cv2.setNumThreads(saved[1])
