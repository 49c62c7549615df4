"""The output worker's allocator policy (``stream.worker._mmap_large_buffers``): big buffers
freed by a long-lived thread go back to the system instead of staying in its malloc arena.

The record sink opens an H.264 encoder per segment (megabytes of buffers) on its encoder
thread and frees them at every rotation; with glibc's default (dynamic) mmap threshold those
buffers soon come from the arena, whose pages stay resident and fragment: ``stream bench soak``
saw the output process grow hundreds of MB/h. Each case runs in a fresh interpreter (the
allocator's state is per process)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import sys, threading
    import numpy as np
    if sys.argv[1] == "policy":
        from stream.worker import _mmap_large_buffers
        _mmap_large_buffers()

    def rss_mb():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024

    kept = []
    def segments():
        for i in range(100):  # per segment: an encoder's buffers, a small object that outlives it
            buffers = [np.ones(300_000 + 4096 * (i % 7), np.uint8) for _ in range(20)]
            kept.append(np.ones(200, np.uint8))
            del buffers

    before = rss_mb()
    t = threading.Thread(target=segments)
    t.start()
    t.join()
    print(rss_mb() - before)
""")


def _held_mb(mode: str) -> float:
    r = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return float(r.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_big_buffers_freed_on_an_encoder_thread_are_given_back_to_the_system():
    default, policy = _held_mb("default"), _held_mb("policy")
    print(f"resident after 100 segments: {default:.1f} MB by default, {policy:.1f} MB with the policy")
    assert default > 3.0, "glibc kept nothing by default: this test shows nothing here"
    assert policy < 1.5, f"{policy:.1f} MB still resident after the buffers were freed"
