"""Two hosts on one machine: two network namespaces joined by a veth pair.

Each namespace has its own loopback and one end of the veth, with a link-local
address (169.254.0.0/16: never routed off the link, so nothing can leave the
machine). A process started with ``cmd(host, argv)`` runs "on" that host: it
sees only that namespace's interfaces. ``rx_bytes`` reads the kernel's byte
counter of a host's veth end: every byte that crossed the link (IP, TCP and
CURVE overhead included). Needs root and iproute2 (``ip``); ``available`` says
why not. Used by the cross-host test and ``stream bench crosshost``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from stream.errors import StreamError


class NetnsError(StreamError):
    """The namespaces cannot be made here (not root, no iproute2, no netns support)."""


def unavailable_reason() -> str | None:
    """None when two namespaces can be made here; else why not (one line)."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if shutil.which("ip") is None:
        return "iproute2 is not installed (no `ip` command; scripts/system-deps.sh installs it)"
    return None


class HostPair:
    """Hosts "a" and "b" at ``address("a")`` / ``address("b")`` on one veth link.

    Use as a context manager: the namespaces (and with them the veth pair) are
    deleted on exit, after killing any process still running in them, even when
    the body failed.
    """

    def __init__(self, tag: str | None = None, subnet: int = 251) -> None:
        tag = tag or f"{os.getpid() % 100000}"
        self.ns = {"a": f"st{tag}a", "b": f"st{tag}b"}
        self.dev = {"a": f"st{tag}va", "b": f"st{tag}vb"}
        self._ip = {"a": f"169.254.{subnet}.1", "b": f"169.254.{subnet}.2"}
        self._made: list[str] = []

    def address(self, host: str) -> str:
        return self._ip[host]

    def cmd(self, host: str, argv: list[str]) -> list[str]:
        """``argv`` run on ``host`` (ip netns exec execs it: the pid is the program's)."""
        return ["ip", "netns", "exec", self.ns[host], *argv]

    def rx_bytes(self, host: str) -> int:
        """Bytes received so far by ``host``'s end of the link."""
        path = f"/sys/class/net/{self.dev[host]}/statistics/rx_bytes"
        out = self._run(self.cmd(host, ["cat", path]))
        return int(out.strip())

    def __enter__(self) -> HostPair:
        why = unavailable_reason()
        if why:
            raise NetnsError(why)
        try:
            for host in ("a", "b"):
                self._run(["ip", "netns", "add", self.ns[host]])
                self._made.append(self.ns[host])
            a, b = self.ns["a"], self.ns["b"]
            self._run(["ip", "link", "add", self.dev["a"], "netns", a, "type", "veth",
                       "peer", "name", self.dev["b"], "netns", b])
            for host in ("a", "b"):
                ns, dev = self.ns[host], self.dev[host]
                self._run(["ip", "-n", ns, "addr", "add", f"{self._ip[host]}/30", "dev", dev])
                self._run(["ip", "-n", ns, "link", "set", dev, "up"])
                self._run(["ip", "-n", ns, "link", "set", "lo", "up"])
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        for ns in self._made:
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for pid in pids:  # only processes in our own namespaces: the ones this run started
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self._made.clear()

    @staticmethod
    def _run(argv: list[str]) -> str:
        r = subprocess.run(argv, capture_output=True, text=True)
        if r.returncode != 0:
            raise NetnsError(f"{' '.join(argv)} failed: {r.stderr.strip() or r.returncode}")
        return r.stdout


def python_cmd(*args: str) -> list[str]:
    """This interpreter running ``stream`` (what a host would run as ``stream ...``)."""
    import sys

    return [sys.executable, "-m", "stream.cli", *args]


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]
