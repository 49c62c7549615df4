"""The exception hierarchy. Every error a user can act on derives from StreamError.

A start-up error is printed as one line (``stream: <message>``) and exits with
``exit_code``; a per-frame error is logged with the frame's source and seq,
counted, and the stage goes on.
"""

from __future__ import annotations


class StreamError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with when this escapes."""

    exit_code = 1


class ConfigError(StreamError):
    """A config key is missing, unknown or has a bad value; the message names the dotted key."""

    exit_code = 2


class SourceError(StreamError):
    """A source cannot be opened or read (missing file, not a video, empty folder, …)."""

    exit_code = 3


class ProtocolError(StreamError):
    """A message on a socket does not decode or has an unsupported schema version."""


class TransportError(StreamError):
    """A socket cannot be bound (port in use, bad endpoint) or shared memory cannot be created."""

    exit_code = 4


class ModelError(StreamError):
    """A model cannot be built or its checkpoint does not match (architecture, classes, truncated)."""

    exit_code = 5


class WeightsError(ModelError):
    """Weights are missing, fail their sha256 check, or cannot be downloaded."""


class UnsafeCheckpointError(WeightsError):
    """A checkpoint needs arbitrary code execution to load (a pickle with globals) and was refused."""


class SupervisorError(StreamError):
    """The run was stopped by the supervisor (too many crashes, a stage that never started)."""

    exit_code = 6


class FrameDropped(StreamError):
    """Raised inside a stage when a frame cannot be used (its shared-memory slot was overwritten)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
