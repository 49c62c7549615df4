"""How much /dev/shm a deployment needs: FrameRing.nbytes is what a ring really takes,
and ``stream check`` adds it up for a config (what a container's shm size must cover)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stream.transport import FrameRing
from tests.conftest import run_stream


@pytest.mark.parametrize(("slots", "slot_bytes"), [(16, 1920 * 1080 * 3), (4, 640 * 480 * 3), (2, 17)])
def test_nbytes_is_the_size_of_the_ring_file(tmp_path: Path, slots: int, slot_bytes: int) -> None:
    ring = FrameRing.create(tmp_path / "r.ring", slots, slot_bytes)
    try:
        assert (tmp_path / "r.ring").stat().st_size == FrameRing.nbytes(slots, slot_bytes)
    finally:
        ring.unlink()


def test_check_reports_the_shared_memory_the_rings_need(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"sources": [
        {"id": "cam", "type": "pattern", "live": True, "ring_slots": 4, "synthetic": {"width": 1920, "height": 1080}},
        {"id": "clip", "type": "pattern", "synthetic": {"width": 640, "height": 480}},
    ]}))
    expected = FrameRing.nbytes(4, 1920 * 1080 * 3) + FrameRing.nbytes(16, 640 * 480 * 3)
    out = run_stream("check", str(cfg), timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"shared memory: {expected / 2**20:.1f} MiB of /dev/shm" in out.stdout, out.stdout
