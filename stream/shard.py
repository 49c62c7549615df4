"""Cameras spread across pipelines: ``stream run CONFIG --shard I/N``.

Every pipeline gets the whole camera list and keeps the sources it owns. The
owner of a source is chosen by rendezvous (highest-random-weight) hashing: each
of the N shards scores every source id with a stable hash of ``(shard, id)``
and the highest score wins. Consequences a user can rely on:

* the N shards are disjoint and together cover every source, whatever order the
  config lists them in, with no coordination between the pipelines;
* going from N to N+1 shards moves only the sources that shard N now wins,
  about 1/(N+1) of them; nothing moves between the shards that stay (a camera's
  tracker and mask state live in one pipeline, so every move restarts them);
* the hash is blake2b, not Python's ``hash()``: the same on every host and run.

In a Kubernetes StatefulSet ``I`` is the pod's ordinal (``auto`` reads it from
the trailing ``-<n>`` of the pod name) and ``N`` the replica count.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from stream.config import Config
from stream.errors import ConfigError

_ORDINAL = re.compile(r"-(\d+)$")
_USAGE = "expected I/N with 0 <= I < N, e.g. --shard 0/3 (or auto/3 in a StatefulSet: I from the pod name)"


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based)."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str, *, pod_name: str | None = None) -> Shard:
    """Parse ``I/N``. ``I`` may be ``auto``: the ordinal suffix of ``pod_name`` (a
    StatefulSet pod is named ``<set>-<ordinal>``), which the entry point takes from
    the environment. Raises ConfigError naming what was wrong."""
    index_text, sep, count_text = text.strip().partition("/")
    if not sep or not count_text.strip().isdigit():
        raise ConfigError(f"--shard {text!r}: {_USAGE}")
    count = int(count_text)
    index_text = index_text.strip()
    if index_text == "auto":
        match = _ORDINAL.search(pod_name or "")
        if match is None:
            raise ConfigError(
                f"--shard {text!r}: 'auto' takes the shard index from the pod name's '-<ordinal>' suffix, "
                f"but the pod name is {pod_name!r}; set POD_NAME (or HOSTNAME) or give the index: --shard 0/{count}"
            )
        index = int(match.group(1))
    elif index_text.isdigit():
        index = int(index_text)
    else:
        raise ConfigError(f"--shard {text!r}: {_USAGE}")
    if count < 1 or index >= count:
        raise ConfigError(
            f"--shard {text!r}: shard index {index} is not below the shard count {count}; {_USAGE} "
            "(in Kubernetes: STREAM_SHARDS must equal the StatefulSet's replicas)"
        )
    return Shard(index, count)


def _score(shard: int, source_id: str) -> int:
    digest = hashlib.blake2b(f"{shard}\x00{source_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(source_id: str, count: int) -> int:
    """The shard (0 … count-1) that runs ``source_id`` when there are ``count`` shards."""
    return max(range(count), key=lambda k: _score(k, source_id))


def select(source_ids: Iterable[str], shard: Shard) -> list[str]:
    """The ids (in their given order) that ``shard`` owns."""
    return [s for s in source_ids if owner(s, shard.count) == shard.index]


def shard_config(config: Config, shard: Shard) -> Config:
    """``config`` with only the sources ``shard`` owns. A shard that owns none is an
    error (a pipeline with no camera does nothing): fewer shards are needed."""
    keep = set(select((s.id for s in config.sources), shard))
    if not keep:
        raise ConfigError(
            f"--shard {shard}: this shard owns none of the {len(config.sources)} sources; "
            f"run at most as many shards as there are cameras (and fewer for an even spread)"
        )
    return config.model_copy(update={"sources": [s for s in config.sources if s.id in keep]})
