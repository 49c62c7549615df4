"""Cameras sharded across pipelines by rendezvous hashing of source ids."""

from __future__ import annotations

import pytest

from stream.config import load_config
from stream.errors import ConfigError
from stream.shard import Shard, owner, parse_shard, select, shard_config

IDS = [f"cam-{i:03d}" for i in range(30)]


def test_three_shards_are_disjoint_and_cover_every_source() -> None:
    parts = [select(IDS, Shard(i, 3)) for i in range(3)]
    assert sorted(sum(parts, [])) == sorted(IDS)
    assert all(set(a).isdisjoint(b) for i, a in enumerate(parts) for b in parts[i + 1:])
    assert all(parts), "every shard gets some of 30 cameras"
    # the order of the config does not matter
    assert [select(list(reversed(IDS)), Shard(i, 3)) for i in range(3)] == [list(reversed(p)) for p in parts]


def test_going_from_3_to_4_shards_moves_at_most_40_percent_and_only_to_the_new_shard() -> None:
    moved = [s for s in IDS if owner(s, 3) != owner(s, 4)]
    assert len(moved) <= 0.4 * len(IDS), moved
    assert all(owner(s, 4) == 3 for s in moved), "a camera only ever moves to the new shard"
    # over many more ids the share is close to the 1/(N+1) = 25 % rendezvous hashing promises
    many = [f"site{i // 50}/cam{i % 50}".replace("/", "-") for i in range(3000)]
    share = sum(owner(s, 3) != owner(s, 4) for s in many) / len(many)
    assert 0.21 < share < 0.29, share


def test_owner_is_fixed_by_the_id_alone() -> None:
    # blake2b, not hash() (salted per process): these values must never change, or an upgrade
    # of some pods in a StatefulSet would run a camera twice or not at all
    assert [owner(f"cam-{i:03d}", 3) for i in range(12)] == [1, 2, 1, 2, 1, 0, 0, 0, 2, 1, 0, 0]
    assert [owner(s, 4) for s in ("gate", "lobby", "dock-3")] == [3, 0, 2]


@pytest.mark.parametrize(("text", "pod", "expected"), [
    ("0/3", None, Shard(0, 3)),
    (" 2/3 ", None, Shard(2, 3)),
    ("auto/4", "stream-3", Shard(3, 4)),
    ("auto/12", "stream-gpu-11", Shard(11, 12)),
])
def test_parse_shard(text: str, pod: str | None, expected: Shard) -> None:
    assert parse_shard(text, pod_name=pod) == expected


@pytest.mark.parametrize(("text", "pod", "message"), [
    ("3", None, "expected I/N"),
    ("a/3", None, "expected I/N"),
    ("3/3", None, "shard index 3 is not below the shard count 3"),
    ("0/0", None, "not below the shard count 0"),
    ("auto/3", "laptop", "pod name is 'laptop'"),
    ("auto/3", "stream-5", "STREAM_SHARDS must equal the StatefulSet's replicas"),
])
def test_bad_shard_is_one_clear_error(text: str, pod: str | None, message: str) -> None:
    with pytest.raises(ConfigError, match="--shard") as exc:
        parse_shard(text, pod_name=pod)
    assert message in str(exc.value)


def test_shard_config_keeps_only_its_sources_in_config_order(tmp_path) -> None:
    sources = [{"id": s, "type": "pattern", "live": True} for s in IDS]
    config = load_config(None, base={"sources": sources})
    kept = shard_config(config, Shard(1, 3))
    assert [s.id for s in kept.sources] == select(IDS, Shard(1, 3))
    assert kept.metrics == config.metrics and kept.pipeline == config.pipeline

    two = load_config(None, base={"sources": sources[:1]})
    empty = next(i for i in range(3) if not select(IDS[:1], Shard(i, 3)))
    with pytest.raises(ConfigError, match="owns none of the 1 sources"):
        shard_config(two, Shard(empty, 3))
