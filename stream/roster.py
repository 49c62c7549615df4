"""Sources added, removed and changed while a run goes on (the control API's work in
the supervisor). The other sources are never paused or restarted.

- **add**: the definition is validated exactly like the config file
  (``stream.config.with_source``) and opened (as at start: a camera only checks its
  address), in the API's thread. Then, in the supervisor's loop: a ring for it, a new
  roster to the stages (``Control('roster')``), and once every stage's heartbeat has
  acknowledged that roster, its capture process starts.
- **remove**: a roster without it goes to the stages (they still accept it until its
  end of stream); once acknowledged, its capture is stopped (SIGTERM), which sends its
  ``EndOfStream`` down the chain: every stage frees its state, the recorder finalizes
  its last segment, subscribers get an end record. When the last stage reports the
  source gone (``Heartbeat.gone``), the capture is let go and its ring removed.
- **change**: remove, then add the new definition under the same id (the stages see
  an end of stream and then a new stream from seq 0).

A split run (``split:``) refuses changes: the other host's stages would not know the
new source. A ``--shard`` run adds only sources whose id it owns.

Operations run one at a time in the supervisor's loop (its sockets are not
thread-safe); the API's thread waits for the result. Times are monotonic seconds.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stream.config import Config, SourceConfig, with_source
from stream.errors import ConfigError, ControlError, SourceError
from stream.messages import Control, RosterEntry, encode_control
from stream.redact import mask_url
from stream.transport import FrameRing, run_prefix, shm_dir

if TYPE_CHECKING:
    from stream.supervisor import Proc, Supervisor

log = logging.getLogger(__name__)

_ACK_TIMEOUT_S = 30.0  # stages that do not acknowledge a roster by then (still loading a model) catch up later
_RESEND_S = 0.5  # PUB drops what a stage subscribed too late for: the roster goes again until acknowledged
_END_TIMEOUT_S = 15.0  # a removed source's end of stream should pass every stage within this
_EXIT_TIMEOUT_S = 3.0
RESULT_TIMEOUT_S = 90.0


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``patch``'s keys; nested mappings (``synthetic``, ``reconnect``) key by key."""
    out = dict(base)
    for key, value in patch.items():
        old = out.get(key)
        out[key] = _merge(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
    return out


def _unknown(source_id: str) -> ControlError:
    return ControlError(f"no source {source_id!r} in this run (GET /api/sources lists them)", 404)


@dataclass
class _Op:
    kind: str  # add | remove | change
    source_id: str
    new: SourceConfig | None = None
    slot_bytes: int = 0
    phase: str = "queued"
    gen: int = 0
    deadline: float = 0.0
    sent_at: float = 0.0
    clean: bool = True
    frames: int = 0
    done: threading.Event = field(default_factory=threading.Event)
    result: tuple[int, dict[str, Any]] | None = None


class RosterChanges:
    """The supervisor's runtime source changes. ``add``/``remove``/``change``/``sources``
    are called from the API's threads; ``step`` and ``cancel`` from the supervisor's loop."""

    def __init__(self, sup: Supervisor, env: Mapping[str, str]) -> None:
        self.sup = sup
        self.env = env
        self.generation = 0
        self.leaving: set[str] = set()
        self._queue: deque[_Op] = deque()
        self._current: _Op | None = None
        self._closed = ""  # why changes are no longer taken (the run ended)
        self._lock = threading.Lock()

    # --- the API's side ----------------------------------------------------------
    def sources(self) -> list[dict[str, Any]]:
        """Every source of the run now: id, type, live, state, fps, frame age, drops."""
        return [self.describe(s.id) for s in self.sup.config.sources]

    def describe(self, source_id: str) -> dict[str, Any]:
        sup = self.sup
        s = next((c for c in sup.config.sources if c.id == source_id), None)
        if s is None:
            raise _unknown(source_id)
        with sup._lock:
            cap = next((p for p in sup.procs if p.name == f"capture:{source_id}"), None)
            drops: dict[str, int] = {}
            for (src, reason), n in sup.ledger.counts.items():
                if src == source_id:
                    drops[reason] = drops.get(reason, 0) + n
            alive = bool(cap and cap.popen and cap.popen.poll() is None)
            return {
                "id": s.id, "type": s.type, "live": s.is_live,
                "url": mask_url(s.url.get_secret_value()) if s.url is not None else None,
                "path": s.path, "fps_setting": s.fps,
                "state": sup._source_states.get(s.id, "starting"),
                "fps": round(sup.fps.get(s.id, 0.0), 2),
                "frame_age_s": round(sup.frame_age_s[s.id], 4) if s.id in sup.frame_age_s else None,
                "frames": cap.hb.frames_out if cap and cap.hb else 0,
                "drops": drops, "dropped": sum(drops.values()),
                "pid": cap.popen.pid if cap and cap.popen and alive else None,
                "restarts": cap.restarts if cap else 0,
            }

    def add(self, definition: Any, label: str) -> tuple[int, dict[str, Any]]:
        self._check_allowed()
        sid = definition.get("id") if isinstance(definition, dict) else None
        if isinstance(sid, str) and any(s.id == sid for s in self.sup.config.sources):
            raise ControlError(f"source {sid!r} exists already: change it (PATCH /api/sources/{sid}, "
                               f"`stream sources change {sid}`) or remove it first", 409)
        new_config = self._validate(definition, label, None)
        s = new_config.sources[-1]
        self._check_shard(s.id)
        return self._submit(_Op("add", s.id, s, self._slot_bytes(s)))

    def change(self, source_id: str, patch: Any, label: str) -> tuple[int, dict[str, Any]]:
        self._check_allowed()
        sources = self.sup.config.sources
        index = next((i for i, s in enumerate(sources) if s.id == source_id), None)
        if index is None:
            raise _unknown(source_id)
        if not isinstance(patch, dict):
            raise ConfigError(f"config error in {label}: a change is a mapping of the keys to change, "
                              f"e.g. {{fps: 5}} (got {type(patch).__name__})")
        if "id" in patch and patch["id"] != source_id:
            raise ConfigError(f"config error in {label}: sources.{index}.id: cannot be changed (got "
                              f"{patch['id']!r}); add a source with the new id and remove this one")
        merged = _merge(sources[index].model_dump(mode="json", exclude_unset=True), {**patch, "id": source_id})
        s = self._validate(merged, label, index).sources[index]
        return self._submit(_Op("change", source_id, s, self._slot_bytes(s)))

    def remove(self, source_id: str) -> tuple[int, dict[str, Any]]:
        self._check_allowed()
        if not any(s.id == source_id for s in self.sup.config.sources):
            raise _unknown(source_id)
        return self._submit(_Op("remove", source_id))

    def _check_allowed(self) -> None:
        sup = self.sup
        if sup.split is not None:
            raise ControlError("sources cannot be changed at runtime on a split pipeline (split: in the config): "
                               "the other host's stages would not know them; edit the config and restart both "
                               "parts", 409)
        if sup._stopping:
            raise ControlError(f"the run is stopping ({sup._stopping}): no source can be changed now", 503)

    def _check_shard(self, source_id: str) -> None:
        shard = self.sup.shard
        if shard is None:
            return
        from stream.shard import owner

        home = owner(source_id, shard.count)
        if home != shard.index:
            raise ControlError(f"source {source_id!r} belongs to shard {home}/{shard.count} (rendezvous hashing "
                               f"of its id), not to this one ({shard}): add it through that pipeline's API, or "
                               "to the config that every shard reads", 409)

    def _validate(self, definition: Any, label: str, index: int | None) -> Config:
        from stream.stages import check_pipeline

        new = with_source(self.sup.config, definition, env=self.env, label=label, index=index)
        check_pipeline(new)
        return new

    @staticmethod
    def _slot_bytes(s: SourceConfig) -> int:
        """Open the source as at start (a camera only checks its address): its ring's slot size."""
        from stream.sources import open_source

        src = open_source(s)
        try:
            info = src.open()
        finally:
            src.close()
        return int(info.width * info.height * 3)

    def _submit(self, op: _Op) -> tuple[int, dict[str, Any]]:
        with self._lock:
            if self._closed:
                raise ControlError(f"{self._closed}: no source can be changed now", 503)
            self._queue.append(op)
        if not op.done.wait(RESULT_TIMEOUT_S):
            return 504, {"error": f"the {op.kind} of source {op.source_id!r} did not finish in "
                                  f"{RESULT_TIMEOUT_S:.0f} s; GET /api/sources shows where it is"}
        assert op.result is not None
        return op.result

    # --- the supervisor's loop -----------------------------------------------------
    def cancel(self, why: str) -> None:
        """The run ends: answer every waiting change."""
        with self._lock:
            self._closed = why
            ops = [*([self._current] if self._current else []), *self._queue]
            self._queue.clear()
            self._current = None
        for op in ops:
            self._finish(op, 503, {"error": f"{why}: the {op.kind} of source {op.source_id!r} was not completed"})

    def step(self) -> None:
        """Advance the current change one phase (never blocks)."""
        if self._current is None:
            with self._lock:
                self._current = self._queue.popleft() if self._queue else None
            if self._current is None:
                return
        op = self._current
        try:
            self._advance(op, time.monotonic())
        except (SourceError, ConfigError, OSError) as exc:
            log.error("source=%s: the %s failed: %s", op.source_id, op.kind, exc)
            self._finish(op, 500, {"error": f"the {op.kind} of source {op.source_id!r} failed: {exc}"})
        if op.done.is_set():
            self._current = None

    def _advance(self, op: _Op, now: float) -> None:
        sup = self.sup
        if op.phase == "queued" and op.kind == "add":
            if any(s.id == op.source_id for s in sup.config.sources):
                return self._finish(op, 409, {"error": f"source {op.source_id!r} exists already"})
            self._start_add(op, now)
        elif op.phase == "queued":  # remove, or the first half of a change
            if not any(s.id == op.source_id for s in sup.config.sources):
                return self._finish(op, 404, {"error": f"no source {op.source_id!r} in this run"})
            self.leaving.add(op.source_id)
            self._set_sources([s for s in sup.config.sources if s.id != op.source_id], op, now, "remove-ack")
        elif op.phase in ("add-ack", "remove-ack"):
            if not self._acknowledged(op.gen):
                if now > op.deadline:
                    log.warning("source=%s: not every stage acknowledged the new roster in %.0f s; going on",
                                op.source_id, _ACK_TIMEOUT_S)
                else:
                    if now - op.sent_at > _RESEND_S:
                        self._publish(now, op)
                    return None
            if op.phase == "add-ack":
                self._start_capture(op)
            else:
                self._stop_capture(op, now)
        elif op.phase == "ending":
            if not self._gone(op.source_id):
                if now > op.deadline:
                    op.clean = False
                    log.warning("source=%s: its end of stream did not reach the output in %.0f s; removing it "
                                "anyway", op.source_id, _END_TIMEOUT_S)
                else:
                    return None
            cap = self._capture(op.source_id)
            if cap is not None and cap.popen is not None and cap.popen.poll() is None:
                cap.popen.send_signal(signal.SIGTERM)  # the second: it may disconnect now
            op.phase, op.deadline = "exiting", now + _EXIT_TIMEOUT_S
        elif op.phase == "exiting":
            cap = self._capture(op.source_id)
            if cap is not None and cap.popen is not None and cap.popen.poll() is None:
                if now < op.deadline:
                    return None
                cap.popen.kill()
                cap.popen.wait()
                op.clean = False
            self._drop_source(op)
            if op.kind == "change":
                self._start_add(op, now)
            else:
                self._finish(op, 200, {"removed": op.source_id, "frames": op.frames, "clean": op.clean})
        return None

    def _start_add(self, op: _Op, now: float) -> None:
        sup = self.sup
        assert op.new is not None and sup.run_dir is not None
        # a name of its own: a stage may still hold an earlier ring of the same id
        path = shm_dir() / f"{run_prefix(sup.run_id)}g{self.generation + 1}-{op.source_id}.ring"
        ring = FrameRing.create(path, op.new.ring_slots, op.slot_bytes)
        with sup._lock:
            sup.rings.append(ring)
            sup.rings_by_source[op.source_id] = ring
        self._set_sources([*sup.config.sources, op.new], op, now, "add-ack")

    def _start_capture(self, op: _Op) -> None:
        sup = self.sup
        assert op.new is not None
        proc = sup.capture_proc(op.new, sup.rings_by_source[op.source_id], sup.config.model_dump(mode="json"))
        with sup._lock:
            sup.procs.append(proc)
            sup.removed.pop(op.source_id, None)
        if sup._captures_started:  # else it starts with the others, once every stage is ready
            sup._spawn(proc)
        log.info("source=%s: added (%s)", op.source_id, op.new.type)
        self._finish(op, 201 if op.kind == "add" else 200, {"source": self.describe(op.source_id)})

    def _stop_capture(self, op: _Op, now: float) -> None:
        cap = self._capture(op.source_id)
        if cap is not None and cap.restart_at is not None:  # crashed, waiting to restart: it stays down
            cap.finished, cap.restart_at = True, None
        if cap is not None and cap.popen is not None and cap.popen.poll() is None:
            cap.popen.send_signal(signal.SIGTERM)  # it stops reading and sends its end of stream
        op.phase, op.deadline = "ending", now + _END_TIMEOUT_S

    def _drop_source(self, op: _Op) -> None:
        """The removed source's capture is gone: forget its process and ring."""
        sup = self.sup
        cap = self._capture(op.source_id)
        with sup._lock:
            if cap is not None:
                op.frames = (cap.hb.last_seq.get(op.source_id, -1) + 1) if cap.hb else 0
                sup.procs.remove(cap)
            if op.source_id in sup.removed:
                sup.removed[op.source_id] = (sup.removed[op.source_id][0], op.frames)
            ring = sup.rings_by_source.pop(op.source_id, None)
            if ring is not None:
                sup.rings.remove(ring)
            for d in (sup._source_states, sup._sent_states, sup.fps, sup.frame_age_s, sup._age_from):
                d.pop(op.source_id, None)
            sup._rate_from.pop(f"capture:{op.source_id}", None)
            self.leaving.discard(op.source_id)
        if ring is not None:
            ring.unlink()
        log.info("source=%s: removed after %d frames%s", op.source_id, op.frames,
                 "" if op.clean else " (not cleanly: see the warnings above)")

    def _set_sources(self, sources: list[SourceConfig], op: _Op, now: float, phase: str) -> None:
        """Make ``sources`` the run's sources: the config every process is (re)started with,
        and a new roster generation for the running stages."""
        sup = self.sup
        removed = [s for s in sup.config.sources if s not in sources]
        with sup._lock:
            sup.config = sup.config.model_copy(update={"sources": sources})
            for s in removed:
                sup.removed[s.id] = (s, 0)
        self.generation += 1
        op.gen, op.phase, op.deadline = self.generation, phase, now + _ACK_TIMEOUT_S
        config_json = sup.config.model_dump(mode="json")
        ids = [s.id for s in sources]
        stale = {s.id: s.stale_after_s for s in sources if s.is_live and s.stale_after_s is not None}
        for p in sup.procs:
            if not p.is_capture:
                p.request["config"] = config_json
                p.request["spec"].update(sources=ids, roster_gen=self.generation, stale_after_s=stale)
        sup._status.sources = tuple(ids)
        self._publish(now, op)

    def _publish(self, now: float, op: _Op) -> None:
        sup = self.sup
        entries = tuple(RosterEntry(s.id, s.is_live, s.stale_after_s) for s in sup.config.sources)
        sup.ctl_sock.send(encode_control(Control("roster", roster=entries, generation=self.generation)))
        op.sent_at = now

    def _acknowledged(self, gen: int) -> bool:
        """Every running stage applied roster ``gen`` (one that is down or restarting gets it
        in its spec when it starts again)."""
        return all(self._stage_has(p, gen) for p in self.sup.procs if not p.is_capture)

    @staticmethod
    def _stage_has(p: Proc, gen: int) -> bool:
        if p.finished or p.popen is None or p.popen.poll() is not None or p.restart_at is not None:
            return True
        return p.hb is not None and p.hb.roster_gen >= gen

    def _gone(self, source_id: str) -> bool:
        """The source's end of stream passed the last stage (or that stage is not running)."""
        last = [p for p in self.sup.procs if not p.is_capture][-1]
        if last.finished or last.popen is None or last.popen.poll() is not None:
            return True
        return last.hb is not None and source_id in last.hb.gone

    def _capture(self, source_id: str) -> Proc | None:
        return next((p for p in self.sup.procs if p.name == f"capture:{source_id}"), None)

    @staticmethod
    def _finish(op: _Op, status: int, body: dict[str, Any]) -> None:
        op.result = (status, body)
        op.done.set()
