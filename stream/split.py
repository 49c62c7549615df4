"""A pipeline split across two hosts (``split`` in the config; docs/crosshost.md).

The upstream host runs the captures and the stages up to and including
``split.after``; that stage's output connects over tcp:// to the downstream
host, whose first stage binds ``split.bind`` and runs the rest and the output.
Pixels cross the hop inside the messages (raw or JPEG). The hop is CURVE
encrypted and authenticated unless ``split.allow_plaintext``: the downstream host
is the server and admits only the listed client public keys.

End of stream crosses the hop like a frame. The upstream's last stage, once every
source has ended, closes its hop socket with a linger (``split.linger_s``) so the
frames still queued reach the downstream host before it exits; the downstream
host runs until its output has seen every source end, as on one host.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stream.errors import ConfigError, TransportError
from stream.transport.keys import Curve

if TYPE_CHECKING:
    from stream.config import Config, SplitConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SplitPlan:
    """index: stages pipeline[:index] run upstream, pipeline[index:] and the output downstream."""

    part: str
    index: int
    config: SplitConfig

    @property
    def upstream(self) -> bool:
        return self.part == "upstream"


def plan(config: Config) -> SplitPlan | None:
    """The split as this host runs it, or None for a one-host pipeline. Refuses a
    split without a part and, for the part run here, missing or unreadable key files."""
    sp = config.split
    if sp is None:
        return None
    if sp.part is None:
        raise ConfigError("config error: split.part: say which part this host runs "
                          "(stream run CONFIG --part upstream | --part downstream)")
    p = SplitPlan(sp.part, config.pipeline.index(sp.after) + 1, sp)
    if hop_curve(p) is None:  # (reads the key files now: a bad path stops the run before any process starts)
        log.warning("split: the hop %s is plaintext (split.allow_plaintext): anyone who can reach it can send "
                    "frames to this pipeline", sp.bind or sp.address)
    return p


def hop_curve(p: SplitPlan) -> dict[str, Any] | None:
    """The key files of this host's end of the hop, as the worker spec carries them
    (paths only: the worker reads them; no key travels in a spec)."""
    sp = p.config
    keys: dict[str, Any]
    spec: dict[str, Any]
    if p.upstream:
        keys = {"split.curve_client_secret_key_file": sp.curve_client_secret_key_file,
                "split.curve_server_public_key_file": sp.curve_server_public_key_file}
        spec = {"secret_key_file": sp.curve_client_secret_key_file,
                "server_key_file": sp.curve_server_public_key_file}
    else:
        keys = {"split.curve_server_secret_key_file": sp.curve_server_secret_key_file,
                "split.curve_allowed_keys": sp.curve_allowed_keys or None}
        spec = {"secret_key_file": sp.curve_server_secret_key_file,
                "allowed_key_files": list(sp.curve_allowed_keys)}
    missing = [k for k, v in keys.items() if not v]
    if sp.allow_plaintext and len(missing) == len(keys):
        return None
    if missing:
        raise ConfigError(
            f"config error: {missing[0]}: required on the {p.part} host for CURVE on the hop "
            "(make keys with `stream keys gen`), or set split.allow_plaintext: true on a trusted network"
        )
    try:
        Curve.from_files(spec)
    except TransportError as exc:
        raise ConfigError(f"config error: split ({p.part} host): {exc}") from None
    return {k: (str(Path(v).resolve()) if isinstance(v, str) else [str(Path(f).resolve()) for f in v])
            for k, v in spec.items()}
