from __future__ import annotations

import time

import numpy as np
import pytest
import zmq

from stream.errors import TransportError
from stream.transport import Endpoint, FrameRing, open_socket, recv_parts, send_parts


@pytest.fixture
def ring(tmp_path):
    r = FrameRing.create(tmp_path / "r.ring", slots=4, slot_bytes=16 * 16 * 3)
    yield r
    r.unlink()


def test_reader_sees_what_the_writer_wrote(ring, tmp_path):
    img = np.random.default_rng(1).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    ref = ring.write(5, img, pts=50)
    reader = FrameRing.attach(tmp_path / "r.ring")
    assert reader.valid(ref)
    np.testing.assert_array_equal(reader.view(ref), img)
    assert not reader.view(ref).flags.writeable


def test_an_overwritten_slot_is_detected_never_read_as_valid(ring):
    a = np.zeros((16, 16, 3), np.uint8)
    ref = ring.write(0, a)
    ring.write(ring.slots, a + 1)  # same slot, next lap
    assert not ring.valid(ref)


def test_backpressure_accounting(ring):
    img = np.zeros((16, 16, 3), np.uint8)
    assert all(ring.slot_free(s) for s in range(ring.slots))
    refs = [ring.write(s, img) for s in range(ring.slots)]
    assert not any(ring.slot_free(ring.slots + s) for s in range(ring.slots))  # all still in the pipeline
    ring.release(refs[2])  # released out of order (dropped by a middle stage): only its slot frees
    assert [ring.slot_free(ring.slots + s) for s in range(ring.slots)] == [False, False, True, False]
    assert ring.released(refs[2]) and not ring.released(refs[1])
    assert ring.released_seq == 2
    before = ring.releases
    ring.release(refs[2])  # twice is once
    assert ring.releases == before
    new = ring.write(ring.slots + 2, img)
    ring.release(refs[2])  # a late release of the old frame leaves the new one alone
    assert not ring.slot_free(ring.slots + 2) and not ring.released(new) and ring.released(refs[2])


def test_the_epoch_is_shared_by_every_process_mapping_the_ring(ring, tmp_path):
    other = FrameRing.attach(tmp_path / "r.ring")
    assert ring.epoch == 0
    other.bump_epoch()
    assert ring.epoch == 1
    other.close()


def test_oversized_frame_is_refused_with_sizes(ring):
    with pytest.raises(TransportError, match="exceeds slot size"):
        ring.write(0, np.zeros((64, 64, 3), np.uint8))


@pytest.mark.parametrize("spec", ["push:ipc:///x", "push+listen:ipc:///x", "foo+bind:ipc:///x", "push+bind:udp://x"])
def test_bad_endpoints_are_named(spec):
    with pytest.raises(TransportError, match="bad endpoint"):
        Endpoint.parse(spec)


def test_push_pull_and_live_drop_when_full(tmp_path):
    ctx = zmq.Context()
    try:
        pull = open_socket(ctx, f"pull+bind:ipc://{tmp_path}/a", hwm=1)
        push = open_socket(ctx, f"push+connect:ipc://{tmp_path}/a", hwm=1)
        assert send_parts(push, [b"t", b"1"], block=True, timeout_s=1)
        assert recv_parts(pull, 1000) is not None
        # nobody reads: a live sender must not block, it reports the drop
        t0 = time.monotonic()
        results = [send_parts(push, [b"t", b"x" * 1_000_000], block=False, timeout_s=0) for _ in range(50)]
        assert time.monotonic() - t0 < 5
        assert sum(results) <= 10, "a peer that never reads must make the sender drop, not queue everything"
    finally:
        ctx.destroy(linger=0)


def test_port_in_use_is_a_transport_error():
    ctx = zmq.Context()
    try:
        a = open_socket(ctx, "pull+bind:tcp://127.0.0.1:0")
        port = a.getsockopt(zmq.LAST_ENDPOINT).decode().rsplit(":", 1)[1]
        with pytest.raises(TransportError, match="cannot bind"):
            open_socket(ctx, f"pull+bind:tcp://127.0.0.1:{port}")
    finally:
        ctx.destroy(linger=0)



def test_one_loopback_rule_for_http_hosts_and_zeromq_addresses() -> None:
    from stream.httpd import is_loopback as http_is_loopback
    from stream.transport import is_loopback_address
    from stream.transport.endpoints import is_loopback

    assert http_is_loopback is is_loopback
    for host in ("localhost", "LOCALHOST", "ip6-localhost", "127.0.0.1", "127.3.2.1", "::1", "[::1]"):
        assert is_loopback(host), host
        assert is_loopback_address(f"tcp://{host}:5560"), host
    for host in ("*", "0.0.0.0", "10.0.0.7", "127.example.com", "eth0", "::", ""):
        assert not is_loopback(host), host
        assert not is_loopback_address(f"tcp://{host}:5560"), host
    assert is_loopback_address("ipc:///tmp/x") and is_loopback_address("inproc://x")
    assert not is_loopback_address("tcp://127.0.0.1;10.0.0.2:5560")  # connect form: the remote host decides
    assert is_loopback_address("tcp://10.0.0.2;127.0.0.1:5560")
