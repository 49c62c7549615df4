"""Events and counts from tracked frames (stream.sinks.mqtt_events), on a scene with known tracks."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

from stream.objects import COCO_CLASSES
from stream.sinks.mqtt_events import SourceEvents
from tests.mqtt_broker import FPS, KNOWN_EVENTS, PERSON, T0_NS, H, Obj, W, ellipse, known_scene, tracked_frame


def key(e: dict) -> tuple:
    return (e["type"], e["id"], e["seq"], e["class"], *([e["end_reason"]] if "end_reason" in e else []))


def run_scene(ev: SourceEvents) -> tuple[list[dict], list[dict]]:
    events, counts = [], []
    for seq, (objs, finished) in enumerate(known_scene()):
        events += ev.frame(tracked_frame(seq, objs, finished))
        counts.append(dict(ev.counts))
    events += ev.end_all("end_of_stream")
    return events, counts


def test_known_tracks_make_exactly_their_events_and_counts():
    events, counts = run_scene(SourceEvents("cam", COCO_CLASSES))
    assert sorted(key(e) for e in events) == sorted(KNOWN_EVENTS)
    assert counts[0] == {"person": 1}
    assert counts[12] == {"car": 1, "person": 2}
    assert counts[27] == {"person": 1, "truck": 1}
    assert counts[40] == {"truck": 1}
    by = {(e["type"], e["id"], e["seq"]): e for e in events}
    new2, end2 = by[("new", 2, 5)], by[("end", 2, 40)]
    assert new2["box"] == [150.0, 100.0, 230.0, 160.0] and new2["score"] == 0.8
    assert new2["first_seen"] == (T0_NS + 5 * 10**9 // FPS) / 1e9
    assert end2["last_seen"] == (T0_NS + 40 * 10**9 // FPS) / 1e9 and end2["class"] == "truck"
    assert (new2["frame_width"], new2["frame_height"]) == (W, H)
    assert by[("end", 1, 32)]["last_seen"] == (T0_NS + 29 * 10**9 // FPS) / 1e9  # last frame it was in
    assert by[("end", 1, 32)]["top_score"] == round(0.50 + 0.01 * 29, 4)
    assert all(e["random_weights"] and e["v"] == 1 and e["source"] == "cam" for e in events)


def test_updates_are_at_most_one_per_interval_per_track():
    ev = SourceEvents("cam", COCO_CLASSES, update_interval_s=1.0, min_score_change=0.0)
    events = []
    for seq in range(50):  # the score changes on every frame, for 5 s at 10 fps
        events += ev.frame(tracked_frame(seq, [Obj(7, PERSON, 0.3 + 0.01 * seq, (0, 0, 10, 10))]))
    updates = [e["seq"] for e in events if e["type"] == "update"]
    assert updates == [10, 20, 30, 40]


def test_a_track_whose_end_was_lost_ends_by_timeout_and_state_is_bounded():
    ev = SourceEvents("cam", COCO_CLASSES, end_after_s=2.0)
    events = ev.frame(tracked_frame(0, [Obj(1, PERSON, 0.9, (0, 0, 10, 10))]))
    for seq in range(1, 25):  # track 1 is never seen again and the tracker never says it ended
        events += ev.frame(tracked_frame(seq, []))
    ends = [e for e in events if e["type"] == "end"]
    assert [(e["id"], e["seq"], e["end_reason"]) for e in ends] == [(1, 20, "timeout")]
    assert ev.tracks == {}


def test_masks_travel_as_coco_rle_of_the_full_frame():
    ev = SourceEvents("cam", COCO_CLASSES, include_masks=True)
    box = (100, 50, 140, 110)
    (new,) = ev.frame(tracked_frame(0, [Obj(1, PERSON, 0.9, box)], masks=True))
    decoded = mask_utils.decode({"size": new["mask"]["size"], "counts": new["mask"]["counts"].encode()})
    expected = np.zeros((H, W), bool)
    expected[50:110, 100:140] = ellipse(box)
    assert decoded.shape == (H, W) and np.array_equal(decoded.astype(bool), expected)
    assert "mask" not in SourceEvents("cam", COCO_CLASSES).frame(tracked_frame(0, [Obj(1, 0, 0.9, box)], masks=True))[0]


def test_objects_without_track_ids_make_no_events():
    from stream.messages import Frame, FrameHeader

    frame = Frame(FrameHeader(source="cam", seq=0, pts=0, time_base=(1, 10), capture_ns=T0_NS)).evolve(
        boxes=np.zeros((2, 4), np.float32), scores=np.ones(2, np.float32), class_ids=np.zeros(2, np.int32)
    )
    ev = SourceEvents("cam", COCO_CLASSES)
    assert ev.frame(frame) == [] and ev.counts == {}
