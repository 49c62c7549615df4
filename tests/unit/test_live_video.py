"""The H.264 viewers' feed (stream.live.video): init once per stream, fragments in order,
a viewer that falls a keyframe interval behind skips to the newest keyframe, and nothing is
built while nobody watches."""

from __future__ import annotations

from dataclasses import replace

from stream.live.video import Cursor, VideoFeed
from tests.unit.test_live_fmp4 import _packets


def test_viewers_get_init_then_fragments_and_a_late_viewer_skips_to_the_newest_keyframe() -> None:
    packets = _packets(25)  # keyframes at 0, 10, 20
    keys: list[str] = []
    feed = VideoFeed(["cam0"], notify=lambda: None)
    feed.request_keyframe = keys.append
    for p in packets[:3]:
        feed.on_packet(p)
    assert feed.take(["cam0"], {}) == [], "nothing is built while nobody watches"

    feed.watch("cam0")
    assert keys == ["cam0"], "a viewer joining asks for a keyframe"
    for p in packets[3:5]:  # not keyframes: the feed waits for one (and asks again)
        feed.on_packet(p)
    assert feed.take(["cam0"], {}) == []
    for p in packets[10:14]:
        feed.on_packet(p)
    cursors: dict[str, Cursor] = {}
    got = feed.take(["cam0"], cursors)
    assert [m.kind for m in got] == ["init", "media", "media", "media", "media"]
    assert got[0].codec.startswith("avc1.") and got[1].keyframe and [m.seq for m in got[1:]] == [10, 11, 12, 13]
    assert feed.take(["cam0"], cursors) == []  # nothing new

    for p in packets[14:23]:  # the viewer does not read across the keyframe at 20
        feed.on_packet(p)
    late = feed.take(["cam0"], cursors)
    assert [m.seq for m in late] == [20, 21, 22] and late[0].keyframe, "skips to the newest keyframe"
    assert all(m.kind == "media" for m in late)  # same stream: no second init

    feed.on_stream_end("cam0", "picture size changed")
    feed.unwatch("cam0")
    assert not feed.wants_packets("cam0")


def test_a_source_added_at_runtime_is_served_and_a_removed_one_let_go_when_its_viewer_leaves() -> None:
    packets = [replace(p, info=replace(p.info, source="cam1")) for p in _packets(3)]
    feed = VideoFeed(["cam0"], notify=lambda: None)
    assert not feed.watch("cam1") and not feed.wants_packets("cam1"), "not served yet"

    feed.set_sources(["cam0", "cam1"])  # added through the control API
    assert feed.watch("cam1") and feed.wants_packets("cam1")
    for p in packets:
        feed.on_packet(p)
    got = feed.take(["cam1"], {})
    assert [m.kind for m in got] == ["init", "media", "media", "media"] and {m.source for m in got} == {"cam1"}

    feed.set_sources(["cam0"])  # removed while its viewer is still on it: kept until it leaves
    assert feed.wants_packets("cam1") and feed.viewers("cam1") == 1
    feed.unwatch("cam1")
    assert not feed.wants_packets("cam1") and not feed.watch("cam1"), "let go"
    assert feed.watch("cam0"), "the other source is untouched"
