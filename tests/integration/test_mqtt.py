"""MQTT sink against a real Mosquitto started by each test (loopback, free port): events
for a scene with known tracks, retained state and availability, a broker killed and
restarted or frozen mid-run, a broker down at start, passwords, TLS."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream.config import load_config
from stream.sinks.mqtt import MqttConfig, MqttSink, build
from tests.conftest import REPO, run_stream, wait_for
from tests.mqtt_broker import (
    KNOWN_EVENTS,
    PERSON,
    Collector,
    Mosquitto,
    Obj,
    free_port,
    known_scene,
    make_certs,
    needs_mosquitto,
    tracked_frame,
)

pytestmark = needs_mosquitto

PREFIX = "t"
EVENTS, STATE, AVAIL = f"{PREFIX}/cam/events", f"{PREFIX}/cam/state", f"{PREFIX}/availability"


@pytest.fixture
def broker(tmp_path: Path):
    b = Mosquitto(tmp_path).start()
    yield b
    b.stop()


@pytest.fixture
def collector(broker: Mosquitto):
    c = Collector(broker.port, f"{PREFIX}/#")
    c.wait_ready()
    yield c
    c.close()


def sink(port: int, **kw: Any) -> MqttSink:
    cfg = MqttConfig(port=port, topic_prefix=PREFIX, client_id=f"test-{time.monotonic_ns()}", **kw)
    return MqttSink(cfg)


def key(e: dict) -> tuple:
    return (e["type"], e["id"], e["seq"], e["class"], *([e["end_reason"]] if "end_reason" in e else []))


def churn_frame(seq: int) -> Any:
    """Track seq+1 appears and track seq ends: two events per frame (one at seq 0)."""
    return tracked_frame(seq, [Obj(seq + 1, PERSON, 0.9, (0, 0, 20, 20))], (seq,) if seq else ())


def test_known_tracks_arrive_as_events_with_retained_state_and_availability(broker, collector):
    s = sink(broker.port)
    wait_for(lambda: s.publisher.connected, 20, "the sink to connect")
    scene = known_scene()
    for seq, (objs, finished) in enumerate(scene):
        s.write(tracked_frame(seq, objs, finished))
        if seq < 10:  # a second camera with only track 1 (and its own ids): its own topics
            s.write(tracked_frame(seq, [o for o in objs if o.track_id == 1], source="yard"))
    wait_for(lambda: collector.on(STATE) and collector.on(STATE)[-1].json()["counts"] == {"truck": 1},
             20, "the state after the last frame")
    s.end_source("cam")
    s.end_source("yard")
    wait_for(lambda: len(collector.on(EVENTS)) >= len(KNOWN_EVENTS), 20, "every event")
    events = collector.events(EVENTS)
    assert sorted(key(e) for e in events) == sorted(KNOWN_EVENTS)
    wait_for(lambda: len(collector.on(f"{PREFIX}/yard/events")) == 2, 20, "the second camera's events")
    yard = collector.events(f"{PREFIX}/yard/events")
    assert [(e["type"], e["id"], e["source"]) for e in yard] == [("new", 1, "yard"), ("end", 1, "yard")]
    wait_for(lambda: collector.on(STATE)[-1].json()["total"] == 0, 20, "the state after the end")
    assert [m.payload for m in collector.on(AVAIL)][:1] == [b"online"]

    late = Collector(broker.port, f"{PREFIX}/#")  # a client that comes later gets the retained topics
    try:
        late.wait_ready()
        wait_for(lambda: late.on(STATE) and late.on(AVAIL), 20, "retained state and availability")
        assert late.on(STATE)[-1].retain and late.on(STATE)[-1].json()["counts"] == {}
        assert late.on(AVAIL)[-1].payload == b"online" and not late.on(EVENTS)
    finally:
        late.close()
    s.close()
    wait_for(lambda: collector.on(AVAIL)[-1].payload == b"offline", 20, "offline on close")
    st = s.stats()["cam"]
    assert st == {"events": len(KNOWN_EVENTS), "published": len(KNOWN_EVENTS), "dropped": 0, "lost": 0, "queued": 0}


def test_broker_killed_and_restarted_mid_run_never_blocks_and_counts_the_loss(broker, collector):
    s = sink(broker.port, queue_size=20, max_inflight=5)
    wait_for(lambda: s.publisher.connected, 20, "the sink to connect")
    for seq in range(10):
        s.write(churn_frame(seq))
    wait_for(lambda: len(collector.on(EVENTS)) == 19, 20, "the events before the outage")

    broker.kill()
    wait_for(lambda: not s.publisher.connected, 20, "the sink to notice")
    slowest = 0.0
    for seq in range(10, 110):  # 200 events while the broker is down
        t0 = time.perf_counter()
        s.write(churn_frame(seq))
        slowest = max(slowest, time.perf_counter() - t0)
    assert slowest < 1.0, f"a write waited {slowest:.3f} s for a dead broker"  # connecting takes up to 5 s
    st = s.stats()["cam"]
    assert st["dropped"] >= 200 - 20 - 5 - 1, st  # the queue (20) and what was in hand; the rest counted

    states_before = len(collector.on(STATE))
    broker.start()  # a new broker: no retained messages
    wait_for(lambda: s.publisher.connects == 2, 30, "the sink to reconnect")
    wait_for(lambda: collector.connected.is_set(), 30, "the test's subscriber to reconnect")
    collector.wait_ready()
    before = len(collector.on(EVENTS))
    for seq in range(110, 120):
        s.write(churn_frame(seq))
    wait_for(lambda: {e["seq"] for e in collector.events(EVENTS)[before:]} >= set(range(110, 120)),
             20, "events after the restart")
    wait_for(lambda: any(m.payload == b"online" for m in collector.on(AVAIL)[1:]), 20, "online again")
    wait_for(lambda: len(collector.on(STATE)) > states_before, 20, "the state sent again to the new broker")
    s.close()
    st = s.stats()["cam"]
    assert st["events"] == 240 and st["queued"] == 0  # 239 + the open track ended at close
    assert st["events"] == st["published"] + st["dropped"] + st["lost"], st


def test_a_frozen_broker_fills_the_queue_then_drops_and_recovers(broker, collector):
    s = sink(broker.port, queue_size=10, max_inflight=5)
    wait_for(lambda: s.publisher.connected, 20, "the sink to connect")
    broker.pause()  # SIGSTOP: the connection stays up, nothing is acknowledged
    try:
        slowest = 0.0
        for seq in range(100):
            t0 = time.perf_counter()
            s.write(churn_frame(seq))
            slowest = max(slowest, time.perf_counter() - t0)
        assert slowest < 1.0, f"a write waited {slowest:.3f} s for a frozen broker"
        assert s.stats()["cam"]["dropped"] >= 199 - 10 - 5 - 1
    finally:
        broker.resume()
    wait_for(lambda: s.stats()["cam"]["queued"] == 0, 20, "the queue to drain once the broker is back")
    for seq in range(100, 105):
        s.write(churn_frame(seq))
    wait_for(lambda: {e["seq"] for e in collector.events(EVENTS)} >= set(range(100, 105)), 20, "events again")
    s.close()
    st = s.stats()["cam"]
    assert st["events"] == st["published"] + st["dropped"] + st["lost"] and st["lost"] == 0, st


def test_the_last_will_marks_a_killed_pipeline_offline(broker, collector):
    script = (
        "import sys, time\n"
        "from stream.sinks.mqtt import MqttConfig, MqttSink\n"
        f"s = MqttSink(MqttConfig(port={broker.port}, topic_prefix={PREFIX!r}, client_id='doomed'))\n"
        "while not s.publisher.connected: time.sleep(0.02)\n"
        "print('connected', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "connected"
        wait_for(lambda: [m.payload for m in collector.on(AVAIL)] == [b"online"], 20, "online")
        proc.kill()  # no clean disconnect: the broker publishes the will
        wait_for(lambda: [m.payload for m in collector.on(AVAIL)] == [b"online", b"offline"], 20, "the will")
    finally:
        proc.kill()
        proc.wait(10)


def test_a_broker_down_at_start_delays_nothing_and_gets_the_queued_events(tmp_path):
    b = Mosquitto(tmp_path)  # not started yet
    t0 = time.perf_counter()
    s = sink(b.port, reconnect_max_s=1)
    for seq in range(5):
        s.write(churn_frame(seq))
    assert time.perf_counter() - t0 < 1.0 and not s.publisher.connected
    b.start()
    c = Collector(b.port, f"{PREFIX}/#")
    try:
        c.wait_ready()  # may come after the sink connects: what it must see is retained
        wait_for(lambda: s.publisher.connected, 30, "the sink to connect once the broker is up")
        wait_for(lambda: c.on(STATE) and c.on(AVAIL), 20, "state and availability")
        assert c.on(STATE)[-1].json()["counts"] == {"person": 1}
        wait_for(lambda: s.stats()["cam"]["published"] == 9, 20, "the queued events to be published")
    finally:
        s.close()
        c.close()
        b.stop()


def test_password_authenticates_and_never_reaches_a_log_line(tmp_path, caplog):
    secret = "pw-Zq8#s3cret"
    b = Mosquitto(tmp_path, users={"stream": secret}).start()
    caplog.set_level(logging.DEBUG)
    c = Collector(b.port, f"{PREFIX}/#", username="stream", password=secret)
    good = bad = None
    try:
        c.wait_ready()
        good = sink(b.port, username="stream", password=secret)
        bad = sink(b.port, username="stream", password=secret + "-wrong")
        wait_for(lambda: good.publisher.connected, 20, "the sink with the right password to connect")
        good.write(churn_frame(0))
        wait_for(lambda: c.on(EVENTS), 20, "an event through an authenticated connection")
        wait_for(lambda: any("refused" in r.getMessage() for r in caplog.records), 20, "the refusal logged")
        assert not bad.publisher.connected
        assert secret not in repr(good.cfg) and secret not in str(good.cfg.model_dump())
    finally:
        for x in (good, bad):
            if x is not None:
                x.close()
        c.close()
        b.stop()
    text = "\n".join(f"{r.name} {r.getMessage()} {r.args}" for r in caplog.records)
    assert "mqtt" in text and secret not in text


def test_tls_with_a_client_certificate_and_the_host_name_check(tmp_path, caplog):
    certs = make_certs(tmp_path)
    b = Mosquitto(tmp_path, tls=(certs["ca"], certs["server"], certs["server_key"])).start()
    c = Collector(b.port, f"{PREFIX}/#", tls=(certs["ca"], certs["client"], certs["client_key"]))
    config = load_config(None, base={"sources": [{"id": "cam", "type": "synthetic"}]})
    tls = {"ca_file": str(certs["ca"]), "cert_file": str(certs["client"]), "key_file": str(certs["client_key"])}
    made = []

    def tls_sink(host: str, insecure: bool, **extra: Any) -> MqttSink:
        section = {"host": host, "port": b.port, "topic_prefix": PREFIX, "tls": {**tls, "insecure": insecure},
                   "client_id": f"tls-{len(made)}", **extra}
        made.append(build(section, config))
        return made[-1]

    try:
        c.wait_ready()
        ok = tls_sink("localhost", False)  # the certificate names localhost
        mismatch = tls_sink("127.0.0.1", False)  # ... not 127.0.0.1: refused by the host name check
        insecure = tls_sink("127.0.0.1", True, availability_topic=f"{PREFIX}/other/availability")
        no_client_cert = tls_sink("localhost", False, tls={"ca_file": str(certs["ca"])},
                                  availability_topic=f"{PREFIX}/nocert/availability")
        wait_for(lambda: ok.publisher.connected and insecure.publisher.connected, 20, "the TLS sinks to connect")
        ok.write(churn_frame(0))
        insecure.write(churn_frame(0))
        wait_for(lambda: len(c.on(EVENTS)) == 2, 20, "events over TLS")
        wait_for(lambda: sum("cannot connect" in r.getMessage() for r in caplog.records) >= 2, 20,
                 "the refused connections logged")
        assert any("certificate verify failed" in r.getMessage() for r in caplog.records)
        assert not mismatch.publisher.connected and not no_client_cert.publisher.connected
    finally:
        for s in made:
            s.close()
        c.close()
        b.stop()


def mot_run_config(tmp_path: Path, mqtt: dict[str, Any]) -> Path:
    det = tmp_path / "det.txt"  # public detections of three people walking for 30 frames
    det.write_text("".join(
        f"{f},-1,{x0 + dx * f},{50 + 80 * i},30,60,0.9,-1,-1,-1\n"
        for f in range(1, 31) for i, (x0, dx) in enumerate(((10, 4), (60, 3), (300, -5)))
    ))
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({
        "sources": [{"id": "seq", "type": "mot", "path": str(det), "fps": 30}],
        "pipeline": ["track"],
        "track": {"minimum_consecutive_frames": 1},
        "sinks": {"mqtt": {"topic_prefix": PREFIX, **mqtt}},
        "metrics": {"port": 0},
    }))
    return cfg


def test_stream_run_with_no_broker_finishes_and_counts_what_it_could_not_send(tmp_path):
    cfg = mot_run_config(tmp_path, {"port": free_port()})  # nothing listens there
    r = run_stream("run", str(cfg), "--summary-json", str(tmp_path / "s.json"), timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "s.json").read_text())["sources"][0]
    assert summary["processed"] == 30
    assert "cannot connect" in r.stderr
    assert re.search(r"mqtt: 6 event\(s\): 0 published, 0 dropped \(queue full\), 6 lost", r.stderr), r.stderr[-2000:]
    assert summary["sinks"]["mqtt"] == {"written": 0, "lost": 6}  # the summary counts what never left
    assert "sink mqtt: 0 messages written, 6 dropped (lost)" in r.stdout, r.stdout


def test_stream_run_publishes_availability_state_and_events_of_a_tracked_scene(tmp_path):
    secret = "run-pw-7Hq2"
    b = Mosquitto(tmp_path, users={"stream": secret}).start()
    c = Collector(b.port, f"{PREFIX}/#", username="stream", password=secret)
    try:
        c.wait_ready()
        cfg = mot_run_config(tmp_path, {"port": b.port, "username": "stream", "password": "${ENV:MQTT_PASSWORD}"})
        r = run_stream("--debug", "run", str(cfg), env={"MQTT_PASSWORD": secret}, timeout=240)
        assert r.returncode == 0, r.stderr[-3000:]
        assert secret not in r.stdout and secret not in r.stderr
        assert "mqtt: connected to" in r.stderr
        wait_for(lambda: c.on(AVAIL) and c.on(AVAIL)[-1].payload == b"offline", 20, "offline at the end")
        assert c.on(AVAIL)[0].payload == b"online"
        events = c.events(f"{PREFIX}/seq/events")
        new = [e for e in events if e["type"] == "new"]
        ends = [e for e in events if e["type"] == "end"]
        assert len(new) == 3 and {e["class"] for e in new} == {"person"}
        assert sorted(e["id"] for e in ends) == sorted(e["id"] for e in new)
        states = [m.json() for m in c.on(f"{PREFIX}/seq/state")]
        assert {"person": 3} in [s["counts"] for s in states]
        assert states[-1]["total"] == 0
    finally:
        c.close()
        b.stop()
