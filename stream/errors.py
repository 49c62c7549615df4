"""The exception hierarchy. Every error a user can act on derives from StreamError.

A start-up error is printed as one line (``stream: <message>``) and exits with
``exit_code``; a per-frame error is logged with the frame's source and seq,
counted, and the stage goes on.

Exit codes of ``stream`` (also in the README): 1 other error, 2 config, 3 source,
4 transport (a port in use), 5 model or weights (missing, corrupt), 6 the
supervisor gave up (a stage kept crashing after it had started), 7 device (e.g.
``cuda:0`` on a machine without a GPU). A stage process that fails with one of
these before it is ready exits with ``STARTUP_EXIT_BASE + code``: the supervisor
stops the run at once with that error instead of restarting what cannot fix itself.
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


class DeviceError(ModelError):
    """The device a model is configured for is not there (``cuda:0`` without a GPU, a GPU index too high)."""

    exit_code = 7


class SupervisorError(StreamError):
    """The run was stopped by the supervisor (too many crashes, a stage that never started)."""

    exit_code = 6


class ControlError(StreamError):
    """A request to the control API (stream.control) that cannot be done, with the HTTP
    ``status`` it is answered with; in ``stream sources``, the API's answer or why it could
    not be reached."""

    exit_code = 8

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class FrameDropped(StreamError):
    """Raised inside a stage when a frame cannot be used (its shared-memory slot was overwritten)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


STARTUP_EXIT_BASE = 100  # a stage worker that fails before ready exits with this + the error's exit_code


def error_for_exit_code(code: int, message: str) -> StreamError:
    """The StreamError whose ``exit_code`` is ``code`` (a StreamError with that code if none is)."""
    for cls in (ConfigError, SourceError, TransportError, ModelError, SupervisorError, DeviceError):
        if cls.exit_code == code:
            return cls(message)
    err = StreamError(message)
    err.exit_code = code
    return err
