"""The split config (a pipeline on two hosts) and CURVE on stage sockets."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
import zmq

from stream.config import load_config
from stream.errors import ConfigError
from stream.split import plan
from stream.transport import Curve, CurveAuth, generate_curve_keypair, open_socket, recv_parts

BASE: dict[str, Any] = {
    "sources": [{"id": "cam", "type": "pattern"}],
    "pipeline": ["passthrough"],
    "transport": {"pixels": "inline", "endpoints": "tcp"},
}


def split(**kw: Any) -> dict[str, Any]:
    return {**BASE, "split": {"after": "passthrough", "address": "tcp://192.0.2.2:5700", **kw}}


def keys(tmp_path: Path) -> Path:
    for name in ("server", "client", "stranger"):
        generate_curve_keypair(tmp_path, name)
    return tmp_path


@pytest.mark.parametrize(("data", "message"), [
    (split(after="detect"), r"split\.after: 'detect' is not a stage of the pipeline.*passthrough"),
    ({**split(), "transport": {"pixels": "shm"}}, r"transport\.pixels: must be 'inline' when split is set"),
    (split(address="192.0.2.2:5700"), r"split\.address: must be tcp://HOST:PORT"),
    (split(pixels="png"), r"split\.pixels: 'png' is not allowed"),
])
def test_bad_split_names_the_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, base=data)


def test_a_split_run_must_say_its_part_and_have_its_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"split\.part: say which part this host runs.*--part upstream"):
        plan(load_config(None, base=split()))
    with pytest.raises(ConfigError, match=r"split\.curve_client_secret_key_file: required on the upstream host.*"
                                          r"stream keys gen.*allow_plaintext"):
        plan(load_config(None, base=split(part="upstream")))
    with pytest.raises(ConfigError, match=r"split\.curve_server_secret_key_file: required on the downstream host"):
        plan(load_config(None, base=split(part="downstream")))
    k = keys(tmp_path)
    with pytest.raises(ConfigError, match=r"split \(downstream host\): .*nope\.key is not a readable ZeroMQ key file"):
        plan(load_config(None, base=split(part="downstream", curve_server_secret_key_file=str(k / "server.key_secret"),
                                          curve_allowed_keys=[str(k / "nope.key")])))
    p = plan(load_config(None, base=split(part="upstream", curve_client_secret_key_file=str(k / "client.key_secret"),
                                          curve_server_public_key_file=str(k / "server.key"))))
    assert p is not None and p.upstream and p.index == 1
    assert plan(load_config(None, base=split(part="upstream", allow_plaintext=True))) is not None


def test_a_curve_stage_socket_admits_only_allowed_client_keys(tmp_path: Path) -> None:
    k = keys(tmp_path)
    ctx: zmq.Context[Any] = zmq.Context()
    auth = CurveAuth(ctx)
    server = Curve.from_files({"secret_key_file": str(k / "server.key_secret"),
                               "allowed_key_files": [str(k / "client.key")]})
    pull = open_socket(ctx, "pull+bind:tcp://127.0.0.1:0", curve=server, auth=auth)
    address = pull.getsockopt_string(zmq.LAST_ENDPOINT)
    try:
        senders = {}
        for name in ("stranger", "client"):
            curve = Curve.from_files({"secret_key_file": str(k / f"{name}.key_secret"),
                                      "server_key_file": str(k / "server.key")})
            senders[name] = open_socket(ctx, f"push+connect:{address}", curve=curve)
        plain = open_socket(ctx, f"push+connect:{address}")
        for name, sock in (*senders.items(), ("plaintext", plain)):
            sock.send_multipart([name.encode()], flags=zmq.NOBLOCK)
        got = []
        while (parts := recv_parts(pull, 1500)) is not None:
            got.append(bytes(parts[0]))
        assert got == [b"client"]
    finally:
        for s in (pull, plain, *senders.values()):
            s.close(0)
        auth.stop()
        ctx.term()


def test_the_upstream_host_of_a_split_prints_its_status_lines_without_an_output_stage(caplog):
    # the upstream part has no output process: the status line reads the stage before the hop
    # (it once looked for "output" with next() and every upstream run, so `stream bench
    # crosshost`, died with StopIteration)
    from stream.messages import AGE_BUCKETS_S, Heartbeat
    from stream.supervisor import Supervisor

    cfg = load_config(None, base={
        "sources": [{"id": "cam", "type": "synthetic", "max_frames": 5}], "pipeline": ["passthrough"],
        "transport": {"endpoints": "tcp", "pixels": "inline"},
        "split": {"after": "passthrough", "address": "tcp://127.0.0.1:5799", "allow_plaintext": True,
                  "part": "upstream"},
        "metrics": {"enabled": False}, "supervisor": {"status_interval_s": 0.01}})
    sup = Supervisor(cfg)
    sup.prepare()
    try:
        assert [p.name for p in sup.procs] == ["passthrough", "capture:cam"]
        stage = sup.procs[0]
        stage.hb = Heartbeat(stage="passthrough", pid=1, time_ns=0, state="running", frames_out=3,
                             last_seq={"cam": 2}, age_buckets={"cam": (3,) * (len(AGE_BUCKETS_S) + 1)})
        sup._status.started = time.monotonic() - 1.0
        with caplog.at_level(logging.INFO, logger="stream.supervisor"):
            sup._print_status()
        assert "first frames" in caplog.text, caplog.text
    finally:
        sup.close()
