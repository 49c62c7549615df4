"""The stage loop (``StageRunner``) on real sockets and a real ring: what it forwards, drops and survives."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np
import pytest

from stream.errors import ProtocolError
from stream.messages import Frame, decode, encode_frame
from stream.stage import StageBase
from tests.unit.stage_harness import Harness

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def harness(tmp_path):
    h = Harness(tmp_path, sources=("cam", "lobby"))
    yield h
    h.close()


class Batched(StageBase):
    """Fails any batch holding a frame whose seq is in ``bad``; records the batch sizes."""

    name = "batched"
    max_batch = 4
    max_wait_ms = 1000.0

    def __init__(self, bad: set[int]) -> None:
        self.bad = bad
        self.sizes: list[int] = []

    def process_batch(self, frames: Sequence[Frame]) -> list[Frame | None]:
        self.sizes.append(len(frames))
        if any(f.seq in self.bad for f in frames):
            raise ValueError("model failed")
        return [f.evolve() for f in frames]


def test_one_failing_frame_in_a_batch_costs_only_itself(harness):
    bad = {1, 5, 9, 13, 17, 21}  # one in each batch of 4
    stage = Batched(bad)
    result = harness.run(stage, [harness.parts(harness.frame(s)) for s in range(24)])
    assert 4 in stage.sizes  # frames really were batched
    assert result.seqs == [s for s in range(24) if s not in bad]
    assert sorted(result.drops()["error"]) == sorted(bad)
    assert result.errors == len(bad)


# --- hostile and broken input ------------------------------------------------------------------

def _header(frame: Frame) -> dict[str, Any]:
    """The frame's header as the plain msgpack map the wire carries (to mutate freely)."""
    return msgspec.msgpack.decode(bytes(encode_frame(frame)[1]))  # type: ignore[no-any-return]


def _encode(header: dict[str, Any], arrays: list[bytes], topic: bytes = b"cam") -> list[Any]:
    return [topic, msgspec.msgpack.encode(header), *arrays]


BAD_SHAPES = [(-1, -4), (2**32, 2**32), (2**63, 2), (2**63, 0), (2**64 - 1,), (0,) * 9, (1, -1), (5,)]
BAD_DTYPES = ["O", "V8", "U4", "<f4", "f16", "", "M8", "c8", "x" * 300]
BAD_RINGS = ["nope-cam.ring", "../run-cam.ring", "a/b-cam.ring", "", "x" * 300 + "-cam.ring", "run-lobby.ring",
             "run-cam.ring\x00", ".hidden-cam.ring", "in", "run-cam"]


# kinds that decode() itself must refuse; the others decode and are refused by the stage
DECODE_KINDS = {"shape", "dtype", "length", "parts", "version", "garbage", "header-type", "topic-only"}


def malformed(rng: random.Random, good: Frame) -> tuple[str, list[Any]]:
    """One message that a real upstream stage could never send (each kind is always invalid)."""
    kind = rng.choice(sorted(DECODE_KINDS | {"ring", "slot", "geometry", "source", "eos"}))
    return kind, _mutate(kind, rng, good)


def _mutate(kind: str, rng: random.Random, good: Frame) -> list[Any]:
    h = _header(good)
    boxes = np.zeros((2, 4), np.float32).tobytes()
    if kind == "shape":
        h["arrays"] = [["boxes", "f4", list(rng.choice(BAD_SHAPES))]]
        return _encode(h, [b"" if rng.random() < 0.5 else boxes])
    if kind == "dtype":
        h["arrays"] = [["boxes", rng.choice(BAD_DTYPES), [2, 4]]]
        return _encode(h, [boxes])
    if kind == "length":
        h["arrays"] = [["boxes", "f4", [2, 4]]]
        cut = rng.choice([0, 1, 31, 33, 64, 1 << 12])
        return _encode(h, [(boxes * 64)[:cut]])
    if kind == "parts":
        h["arrays"] = [["boxes", "f4", [2, 4]]] * rng.randint(0, 3)
        return _encode(h, [boxes] * (len(h["arrays"]) + rng.choice([-1, 1])) if h["arrays"] else [boxes])
    if kind == "ring":
        h["pixels"][0] = rng.choice(BAD_RINGS)
        return _encode(h, [])
    if kind == "slot":
        h["pixels"][1] = rng.choice([-1, -64, 64, 65, 2**62, 2**63 - 1])  # the ring has 64 slots
        return _encode(h, [])
    if kind == "geometry":
        h["pixels"][3:6] = rng.choice([[0, 24, 3], [16, 24, 0], [16, -24, 3], [4096, 4096, 3], [2**31, 2**31, 3],
                                       [1, 1, 2**40]])
        return _encode(h, [])
    if kind == "source":
        h["source"] = rng.choice(["intruder", "", "cam2", "x" * 500])
        return _encode(h, [], topic=h["source"].encode())
    if kind == "eos":  # an end-of-stream for a source this run lacks must not end the stage
        return _encode({"type": "eos", "source": rng.choice(["ghost", "CAM", "cam "]), "frames": 0,
                        "reason": "x", "version": 1}, [])
    if kind == "version":
        h["version"] = rng.choice([0, 2, 99, -1])
        return _encode(h, [])
    if kind == "garbage":
        return [b"cam", bytes([0xC1]) + rng.randbytes(rng.randint(0, 64))]  # 0xc1 is never valid msgpack
    if kind == "header-type":
        h[rng.choice(["seq", "pts", "capture_ns", "time_base", "pixels", "stamps"])] = rng.choice(
            ["x", 1.5, [1, 2, 3], {"a": 1}, True])
        return _encode(h, [])
    return [b"cam"]


def test_structured_mutations_never_escape_decode_as_anything_but_protocol_error(harness):
    rng = random.Random(7)
    good = harness.frame(0)
    for _ in range(3000):
        kind, parts = malformed(rng, good)
        if kind in DECODE_KINDS:
            with pytest.raises(ProtocolError):
                decode(parts)
    valid = [bytes(p) for p in encode_frame(harness.frame(3, boxes=np.ones((3, 4), np.float32)))]
    for _ in range(3000):  # random damage to a valid message: it decodes or it is a ProtocolError
        parts = list(valid)
        i = rng.randrange(1, len(parts))
        data = bytearray(parts[i])
        for _ in range(rng.randint(1, 4)):
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
        parts[i] = bytes(data[: rng.randint(0, len(data))] if rng.random() < 0.3 else data)
        try:
            decode(parts)
        except ProtocolError:
            pass


def test_a_stage_survives_a_flood_of_malformed_messages_counting_each(harness):
    rng = random.Random(11)
    n_bad = 400
    sent_good: list[int] = []

    def messages() -> list[list[Any]]:
        out = []
        for i in range(n_bad):
            out.append(malformed(rng, harness.frame(i % 8))[1])
            if i % 20 == 0:  # real frames in between still flow
                seq = len(sent_good)
                sent_good.append(seq)
                out.append(harness.parts(harness.frame(seq, source="lobby")))
        return out

    result = harness.run(StageBase(), messages)
    assert result.exit_code == 0
    assert result.seqs == sent_good
    assert result.errors == n_bad  # each one counted
    assert [e.source for e in result.events] == ["cam", "lobby"]  # and only the real end-of-streams ended it


class Filter(StageBase):
    name = "filter"

    def process(self, frame: Frame) -> Frame | None:
        if frame.seq % 3 == 0:
            raise ValueError("bad frame")
        return None if frame.seq % 3 == 1 else frame.evolve()


def test_every_drop_releases_its_ring_slot_and_stale_live_frames_are_dropped_unprocessed(harness):
    import time

    ring = harness.rings["cam"]
    frames = [harness.frame(s) for s in range(9)]
    old = time.time_ns() - 5 * 10**9  # waited 5 s: stale for a bound of 1 s
    stale = [harness.frame(s, source="lobby", capture_ns=old) for s in range(3)]
    seen: list[int] = []

    class Recording(Filter):
        def process(self, frame: Frame) -> Frame | None:
            if frame.source == "lobby":
                seen.append(frame.seq)
            return super().process(frame)

    result = harness.run(Recording(), [harness.parts(f) for f in frames + stale],
                         stale_after_s={"lobby": 1.0})
    assert result.seqs == [2, 5, 8]
    drops = result.drops()
    assert sorted(drops["error"]) == [0, 3, 6] and sorted(drops["filtered"]) == [1, 4, 7]
    assert sorted(drops["stale"]) == [0, 1, 2] and seen == []
    # dropped frames are done: their slots are free (a file source would not wait for them)
    dropped = [f for f in frames if f.seq % 3 != 2]
    assert all(ring.released(f.header.pixels) for f in dropped)
    assert all(harness.rings["lobby"].released(f.header.pixels) for f in stale)
    assert not any(ring.released(f.header.pixels) for f in frames if f.seq % 3 == 2)  # forwarded: still out


def test_the_output_stage_is_an_ordinary_stage_its_sinks_get_stamped_frames_and_it_reports(harness, tmp_path):
    """Built from the registry like every stage and run with no special hand-in: the sinks get
    each frame stamped by the output stage (the JSONL sink writes the stamps), every ring slot is
    released, and the run report counts what was delivered per source."""
    import json

    from stream.config import load_config
    from stream.stages import build_stage

    path = tmp_path / "frames.jsonl"
    config = load_config(None, [f"sinks.jsonl.path={path}"], base={"sources": [{"id": "cam", "type": "synthetic"}]})
    stage = build_stage("output", config)
    frames = [harness.frame(seq, "cam") for seq in range(5)] + [harness.frame(seq, "lobby") for seq in range(3)]
    result = harness.run(stage, [harness.parts(f) for f in frames], last=True)
    assert result.exit_code == 0
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted((r["source"], r["seq"]) for r in lines) == sorted((f.source, f.seq) for f in frames)
    assert all(r["stamps"] and r["stamps"][-1][0] == "output" for r in lines)
    assert all(ring.releases == n for ring, n in zip(harness.rings.values(), (5, 3), strict=True))
    assert max(hb.frames_out for hb in result.heartbeats) == len(frames)
    (report,) = result.reports
    assert {s.source: s.received for s in report.sources} == {"cam": 5, "lobby": 3}


@pytest.mark.parametrize("hop", [False, True])
def test_with_inline_pixels_a_frame_s_credit_comes_back_when_its_way_ends_here(harness, hop):
    """Inline pixels: each live frame carries the ring slot its capture reserved (its in-flight
    credit). A drop releases it; a forwarded frame keeps it, unless the stage sends over the hop
    of a split (``report``): the other host cannot see this host's rings, so it is released
    there and does not cross. A credit naming another source's ring is refused, not released."""
    from stream.messages import FrameHeader

    ring, other = harness.rings["cam"], harness.rings["lobby"]

    def inline(seq: int, credit_ring: Any = ring) -> tuple[Frame, Any]:
        credit = credit_ring.reserve(seq, pts=seq)
        header = FrameHeader("cam", seq, seq, (1, 30), time.time_ns(), credit=credit)
        return Frame(header, image=np.full((4, 4, 3), seq % 256, np.uint8)), credit

    sent = [inline(s) for s in range(6)]
    forged, forged_credit = inline(6, credit_ring=other)
    messages = [encode_frame(f, inline_image=True) for f, _ in [*sent, (forged, forged_credit)]]
    result = harness.run(Filter(), messages, inline_pixels=True, report=hop)
    assert result.seqs == [2, 5] and result.errors == 2 + 1  # seqs 0 and 3 fail; the forged frame
    credits = {f.seq: c for f, c in sent}
    assert all(ring.released(credits[s]) for s in (0, 1, 3, 4))  # dropped: their credit is back
    assert all(ring.released(credits[s]) == hop for s in (2, 5))  # forwarded: still out, unless over the hop
    assert all((f.header.credit is None) == hop for f in result.frames)
    assert not other.released(forged_credit)
