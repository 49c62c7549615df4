"""CURVE keys: the per-socket ``Curve`` settings, a run's own fresh keys, and key files.

Key files are ZeroMQ certificate files (z85 text): NAME.key holds the public key,
NAME.key_secret the public and the secret key (``stream keys gen``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from stream.errors import TransportError


@dataclass(frozen=True)
class Curve:
    """CURVE on one stage socket (z85 keys, 40 bytes each). A bound socket is the
    server: ``secret_key`` is its own, and only clients whose public key is in
    ``allowed`` get in (checked by a ZAP handler in the binding process). A
    connecting socket is a client: ``public_key`` + ``secret_key`` are its own,
    ``server_key`` the server's public key."""

    secret_key: bytes
    public_key: bytes = b""
    server_key: bytes = b""
    allowed: frozenset[bytes] = frozenset()

    @classmethod
    def from_spec(cls, spec: dict[str, Any] | None) -> Curve | None:
        """From a worker spec's entry: key files (``from_files``) or the run's own keys
        ({"secret_key", "public_key", "server_key", "allowed"}: z85 strings); None: off."""
        if spec is None:
            return None
        if "secret_key_file" in spec:
            return cls.from_files(spec)
        return cls(spec["secret_key"].encode(), spec.get("public_key", "").encode(),
                   spec.get("server_key", "").encode(), frozenset(k.encode() for k in spec.get("allowed", ())))

    @classmethod
    def from_files(cls, spec: dict[str, Any]) -> Curve:
        """From key files: {"secret_key_file"} plus {"server_key_file"} (client) or
        {"allowed_key_files": [...]} (server), as written by ``stream keys gen``."""
        public, secret = load_curve_secret_key(Path(spec["secret_key_file"]))
        server = spec.get("server_key_file")
        allowed = load_allowed_keys(files=tuple(Path(f) for f in spec.get("allowed_key_files", ())))
        return cls(secret, public, load_curve_public_key(Path(server)) if server else b"", allowed)


def run_curve_keys() -> tuple[dict[str, Any], dict[str, Any]]:
    """Fresh CURVE keys for one run's own tcp:// hops (``transport.curve``), as worker
    spec entries: (server: every socket the run binds; client: every socket it connects).
    They exist only in the supervisor's memory and its workers' stdin: a local process
    outside the run has no allowed key, and is refused."""
    server_public, server_secret = zmq.curve_keypair()
    client_public, client_secret = zmq.curve_keypair()
    server = {"secret_key": server_secret.decode(), "allowed": [client_public.decode()]}
    client = {"secret_key": client_secret.decode(), "public_key": client_public.decode(),
              "server_key": server_public.decode()}
    return server, client



def generate_curve_keypair(directory: Path, name: str) -> tuple[Path, Path]:
    """Write NAME.key (public) and NAME.key_secret (public + secret, mode 0600) in
    ``directory`` in ZeroMQ's certificate format (z85 keys). Refuses to overwrite."""
    import zmq.auth

    public_file, secret_file = directory / f"{name}.key", directory / f"{name}.key_secret"
    for f in (public_file, secret_file):
        if f.exists():
            raise TransportError(f"{f} already exists; remove it or choose another --name")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        old_umask = os.umask(0o077)  # the secret file is never readable by others, even briefly
        try:
            pub, sec = zmq.auth.create_certificates(directory, name)
        finally:
            os.umask(old_umask)
        Path(pub).chmod(0o644)
        Path(sec).chmod(0o600)
    except OSError as exc:
        raise TransportError(f"cannot write keys in {directory}: {exc.strerror}") from exc
    return Path(pub), Path(sec)


def _load_certificate(path: Path) -> tuple[bytes, bytes | None]:
    """(public, secret or None) z85 keys of a ZeroMQ certificate file; TransportError when unreadable."""
    try:
        import zmq.auth

        return zmq.auth.load_certificate(path)  # type: ignore[no-any-return]
    except (OSError, ValueError) as exc:
        raise TransportError(
            f"{path} is not a readable ZeroMQ key file (make one with `stream keys gen`): {exc}"
        ) from None


def load_curve_public_key(path: Path) -> bytes:
    """The z85 public key (40 bytes) in a .key or .key_secret file."""
    public, _ = _load_certificate(path)
    if len(public) != 40:
        raise TransportError(f"{path}: the public key is not 40 z85 characters")
    return public


def load_curve_secret_key(path: Path) -> tuple[bytes, bytes]:
    """(public, secret) z85 keys from a .key_secret file. Never logs the key."""
    public, secret = _load_certificate(path)
    if secret is None or len(secret) != 40:
        raise TransportError(
            f"{path} holds no secret key; give the NAME.key_secret file written by `stream keys gen`"
        )
    return public, secret


def load_allowed_keys(directory: Path | None = None, files: tuple[Path, ...] = ()) -> frozenset[bytes]:
    """Public keys (z85) from every *.key file in ``directory`` and from ``files``."""
    paths = list(files)
    if directory is not None:
        if not directory.is_dir():
            raise TransportError(f"allowed-keys directory {directory} does not exist")
        paths.extend(sorted(directory.glob("*.key")))
    return frozenset(load_curve_public_key(p) for p in paths)
