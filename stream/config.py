"""Typed configuration: YAML file + ``--set a.b=v`` overrides + ``${ENV:NAME}`` secrets.

Validated once at start (pydantic v2). Any problem raises ConfigError with one
line naming the dotted key, the bad value and what is allowed, e.g.::

    config error: sources.0.type: 'camera' is not allowed (allowed: 'file', 'folder', …)
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from stream.errors import ConfigError
from stream.sections.base import StrictModel
from stream.sections.preprocess import PreprocessConfig
from stream.sections.render import RenderConfig
from stream.sections.sinks import SinksConfig, check_sink_sources
from stream.sections.stages import DetectConfig, PassthroughConfig, SegmentConfig, TrackConfig

SOURCE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_ENV_REF = re.compile(r"\$\{ENV:([A-Za-z_][A-Za-z0-9_]*)\}")


_Model = StrictModel  # every section's models: stream.sections
ALL_SOURCES = "*"  # the preprocess key that applies to every source without its own
_M = TypeVar("_M", bound=BaseModel)


class SyntheticConfig(_Model):
    """The synthetic scene's and the test pattern's picture. pattern (``type: pattern`` only):
    'cycle' (4 different pictures in turn: the most a transport or encoder is asked to carry)
    or 'moving' (one still picture with a box sliding across it: a fixed camera, for encoders
    that code the change from the previous frame)."""

    width: int = Field(1280, ge=16, le=7680)
    height: int = Field(720, ge=16, le=4320)
    seed: int = 0
    num_objects: int = Field(6, ge=0, le=500)
    motion: Literal["rigid", "nonrigid"] = "rigid"
    occlusion: bool = True
    churn: bool = True
    pattern: Literal["cycle", "moving"] = "cycle"


NETWORK_TYPES = ("rtsp", "rtmp", "http")
LIVE_TYPES = (*NETWORK_TYPES, "webcam")


class ReconnectConfig(_Model):
    """How a live network or webcam source retries. The wait before retry k (k = 1, 2, …) is
    min(max_s, initial_s · 2^(k-1)) seconds times a random factor in [1 - jitter, 1], but
    at most fast_s during the first fast_for_s seconds of failures (a short outage ends in
    a fast reconnect); the first retry after a stream that was flowing is immediate.
    max_attempts: failed attempts in a row before the source is given up (its capture ends,
    state failed); None retries forever."""

    initial_s: float = Field(0.25, gt=0, le=60)
    max_s: float = Field(2.0, gt=0, le=600)
    fast_s: float = Field(0.5, gt=0, le=60)
    fast_for_s: float = Field(30.0, ge=0, le=3600)
    jitter: float = Field(0.5, ge=0, le=1)
    max_attempts: int | None = Field(None, ge=1)


class WebcamConfig(_Model):
    """type webcam: the capture format asked of the camera (it may choose the nearest one it
    supports; the format it gave is logged). fourcc: 4 characters, e.g. MJPG or YUYV."""

    width: int | None = Field(None, ge=16, le=7680)
    height: int | None = Field(None, ge=16, le=4320)
    fourcc: str | None = Field(None, min_length=4, max_length=4)


class SourceConfig(_Model):
    """One input. type decides which fields are needed:
    file (path), folder (path), synthetic (synthetic.*), pattern (synthetic.width/height/pattern), mot (path to det.txt),
    rtsp / rtmp / http (url; http covers HLS playlists and HTTP streams), webcam (device: index or /dev/video path).

    Live network and webcam sources (always live) reconnect on failure (``reconnect``), are
    declared stalled after ``stall_timeout_s`` without a frame (default max(2 frame intervals,
    2 s)), and keep at most ``buffer`` decoded frames waiting (the oldest is dropped) and
    ``max_in_flight`` frames between capture and the last stage. Their ring slots are sized
    for ``max_width``×``max_height``; a larger frame is downscaled to fit (with a warning).
    ``url`` is a secret (it may hold a password, best given as ``${ENV:NAME}``): it is
    masked in repr, logs and errors. ``stale_after_s`` (live sources; None: off): a frame that
    waited longer than this between two stages (the next one was stalled) is dropped when
    that stage gets it, counted as ``stale``, instead of being processed.
    """

    id: str
    type: Literal["file", "folder", "synthetic", "pattern", "mot", "rtsp", "rtmp", "http", "webcam"]
    path: str | None = Field(None, validate_default=True)
    url: SecretStr | None = Field(None, validate_default=True)
    device: int | str | None = Field(None, validate_default=True)
    live: bool = False
    loop: bool = False
    fps: float | None = Field(None, gt=0, le=1000)
    max_frames: int | None = Field(None, ge=1)
    ring_slots: int = Field(16, ge=2, le=1024)
    synthetic: SyntheticConfig = SyntheticConfig()
    transport: Literal["tcp", "udp"] = "tcp"
    ffmpeg_options: dict[str, str] = {}
    webcam: WebcamConfig = WebcamConfig()
    max_width: int = Field(1920, ge=16, le=7680)
    max_height: int = Field(1080, ge=16, le=4320)
    buffer: int = Field(1, ge=1, le=64)
    max_in_flight: int = Field(2, ge=1, le=64)
    open_timeout_s: float = Field(4.0, gt=0, le=120)
    stall_timeout_s: float | None = Field(None, gt=0, le=600)
    reconnect: ReconnectConfig = ReconnectConfig()
    stale_after_s: float | None = Field(5.0, gt=0, le=3600)

    @property
    def is_live(self) -> bool:
        """The one notion of "live" the supervisor, the capture and every stage share:
        rtsp / rtmp / http / webcam sources always, any other with ``live: true``. Live
        sources drop at the edge and never wait; files never lose a frame."""
        return self.live or self.type in LIVE_TYPES

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not SOURCE_ID.match(v):
            raise ValueError("must be 1-64 letters, digits, '_' or '-', starting with a letter or digit")
        return v

    # Field validators, not a model validator: a model-level error would quote the whole
    # section, url (and its password) included, in the error message.
    @field_validator("path")
    @classmethod
    def _needs_path(cls, v: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("type")
        if kind in ("file", "folder", "mot") and not v:
            raise ValueError(f"path is required for a source of type {kind!r}")
        return v

    @field_validator("url")
    @classmethod
    def _needs_url(cls, v: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        kind = info.data.get("type")
        if kind in NETWORK_TYPES and (v is None or not v.get_secret_value()):
            raise ValueError(
                f"url is required for a source of type {kind!r} "
                f"(e.g. {kind}://user:${{ENV:CAM_PASSWORD}}@host/path)"
            )
        return v

    @field_validator("device")
    @classmethod
    def _needs_device(cls, v: int | str | None, info: ValidationInfo) -> int | str | None:
        if info.data.get("type") == "webcam" and (v is None or v == ""):
            raise ValueError("device is required for a webcam source: an index (0) or a path (/dev/video0)")
        return v

    @field_serializer("url", when_used="json")
    def _reveal_url(self, v: SecretStr | None) -> str | None:
        # JSON is how the config reaches the worker processes (over stdin, never argv).
        return v.get_secret_value() if v is not None else None


class TransportConfig(_Model):
    """pixels: 'shm' (one host: a ring per source) or 'inline' (pixels in the
    message; needed between hosts). endpoints: 'ipc' (one host; the sockets are files
    only this user can open) or 'tcp' (any local process can connect to a port).
    curve: with tcp endpoints, every stage, heartbeat and control socket of the run is
    CURVE-authenticated with keys made for the run, so a process outside the run cannot
    send to a stage. (The hop between hosts has its own keys: ``split``.)"""

    pixels: Literal["shm", "inline"] = "shm"
    endpoints: Literal["ipc", "tcp"] = "ipc"
    tcp_host: str = "127.0.0.1"
    tcp_base_port: int = Field(0, ge=0, le=65000)
    hwm: int = Field(4, ge=1, le=10000)
    curve: bool = False


class SplitConfig(_Model):
    """Run the pipeline on two hosts (docs/crosshost.md). The upstream host runs the
    captures and the stages up to and including ``after``; the downstream host runs the
    rest and the output. The same file serves both: ``stream run CONFIG --part upstream``
    on one host, ``--part downstream`` on the other.

    address: tcp://HOST:PORT the upstream host connects to; bind: what the downstream
    host binds (default: address; e.g. tcp://0.0.0.0:5700). pixels: how the pixels cross
    the hop: raw (H×W×3 bytes) or jpeg (at jpeg_quality). linger_s: how long the
    upstream's last stage waits, at the end, to hand its queued frames to the peer.
    CURVE (keys from ``stream keys gen``), required unless allow_plaintext: the downstream
    host is the server (curve_server_secret_key_file, and the upstream hosts' public keys
    in curve_allowed_keys); the upstream host is a client (curve_client_secret_key_file,
    curve_server_public_key_file). Each host reads only the files of its own part."""

    after: str
    part: Literal["upstream", "downstream"] | None = None
    address: str
    bind: str | None = None
    pixels: Literal["raw", "jpeg"] = "raw"
    jpeg_quality: int = Field(90, ge=1, le=100)
    linger_s: float = Field(30.0, ge=0, le=3600)
    curve_server_secret_key_file: str | None = None
    curve_allowed_keys: list[str] = []
    curve_client_secret_key_file: str | None = None
    curve_server_public_key_file: str | None = None
    allow_plaintext: bool = False

    @field_validator("address", "bind")
    @classmethod
    def _tcp(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^tcp://[^/]+:\d+$", v):
            raise ValueError("must be tcp://HOST:PORT")
        return v


class SupervisorConfig(_Model):
    """A stage that sends no heartbeat for heartbeat_timeout_s (frozen: SIGSTOP, swap) is
    killed and restarted after restart_backoff_s: within about 3.5 s by default. A long
    model call does not count: heartbeats come from their own thread every
    heartbeat_interval_s; a batch running longer than stall_timeout_s does.

    While a stage loads (builds its models, warms up) it heartbeats too: silence longer
    than load_heartbeat_timeout_s kills it (more lenient than heartbeat_timeout_s: a C
    extension's import holds the GIL, gaps of 2.4 s were measured on 2 busy cores), and
    so does still loading startup_timeout_s after it was started (the deadline of the
    whole load, first heartbeat included; a first YOLO-NAS build took over 300 s under load)."""

    heartbeat_interval_s: float = Field(0.5, gt=0, le=60)
    heartbeat_timeout_s: float = Field(3.0, gt=0)
    stall_timeout_s: float = Field(300.0, gt=0)
    startup_timeout_s: float = Field(900.0, gt=0)
    load_heartbeat_timeout_s: float = Field(30.0, gt=0)
    max_crashes: int = Field(5, ge=1)
    crash_window_s: float = Field(60.0, gt=0)
    restart_backoff_s: float = Field(0.5, ge=0)
    restart_backoff_max_s: float = Field(8.0, ge=0)
    shutdown_timeout_s: float = Field(8.0, gt=0)
    drain_idle_s: float = Field(3.0, gt=0)
    status_interval_s: float = Field(5.0, ge=0)  # a status line per source this often (0: none)
    health_window_s: float = Field(10.0, gt=0, le=3600)  # /healthz: no frame out for this long while streaming → 503


class MetricsConfig(_Model):
    """/metrics and /healthz. On a loopback host only a loopback Host header is
    answered; idle_timeout_s: a connection silent this long is closed.

    api: the control API on the same server (``/api/sources``: list, add, remove and
    change sources at runtime; ``stream.control``). token: required by the API in
    ``Authorization: Bearer <token>`` when set; without one the API answers only on a
    loopback host (off loopback it is refused: set a token, best as ``${ENV:NAME}``).
    ``/metrics`` and the probes never need the token."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9464, ge=0, le=65535)
    idle_timeout_s: float = Field(10.0, gt=0, le=3600)
    api: bool = True
    token: SecretStr | None = None

    @field_validator("token", mode="before")
    @classmethod
    def _token_is_text(cls, v: Any) -> Any:
        if v is not None and not isinstance(v, str | SecretStr):
            # raised here, not as a ValueError: pydantic's message would quote the token
            raise ConfigError("config error: metrics.token: must be a string (quote it in YAML, or use ${ENV:NAME})")
        if isinstance(v, str) and not v:
            raise ConfigError("config error: metrics.token: must not be empty (leave it out for no token)")
        return v

    @field_serializer("token", when_used="json")
    def _reveal_token(self, v: SecretStr | None) -> str | None:
        return v.get_secret_value() if v is not None else None


class Config(_Model):
    name: str = "stream"
    random_weights: bool = False
    cache_dir: str = ".cache/stream"  # weights and model artifacts; the CLI fills in $STREAM_CACHE or ~/.cache/stream
    sources: list[SourceConfig] = Field(min_length=1)
    pipeline: list[str] = []
    passthrough: PassthroughConfig = PassthroughConfig()
    preprocess: dict[str, PreprocessConfig] = {}  # source id (or "*") -> its settings
    detect: DetectConfig = DetectConfig()
    track: TrackConfig = TrackConfig()
    segment: SegmentConfig = SegmentConfig()
    render: RenderConfig = RenderConfig()
    sinks: SinksConfig = SinksConfig()
    transport: TransportConfig = TransportConfig()
    split: SplitConfig | None = None
    supervisor: SupervisorConfig = SupervisorConfig()
    metrics: MetricsConfig = MetricsConfig()
    _env_names: frozenset[str] = PrivateAttr(default_factory=frozenset)

    @property
    def env_names(self) -> frozenset[str]:
        """The environment variables ``${ENV:NAME}`` references resolved (secrets, mostly):
        the supervisor keeps them out of its workers' environment, which get the
        resolved config on stdin and need none of them."""
        return self._env_names

    @field_validator("sources")
    @classmethod
    def _unique_ids(cls, v: list[SourceConfig]) -> list[SourceConfig]:
        seen: set[str] = set()
        for i, s in enumerate(v):
            if s.id in seen:
                # raised directly: pydantic's message would quote every source, urls and passwords too
                raise ConfigError(f"config error: sources.{i}.id: source id {s.id!r} is used twice")
            seen.add(s.id)
        return v

    # ConfigError is raised directly (pydantic lets it through): these messages need the
    # source ids, and a model-level ValueError would quote the whole config (secrets too).
    @field_validator("preprocess", mode="before")
    @classmethod
    def _preprocess_keys(cls, v: Any, info: ValidationInfo) -> Any:
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise ConfigError(
                "config error: preprocess: must be a mapping of source id → settings, "
                f"e.g. {{cam1: {{gamma: 1.8}}}} (got {type(v).__name__})"
            )
        ids = [s.id for s in info.data.get("sources", ())]
        for key, value in v.items():
            if "sources" in info.data and str(key) != ALL_SOURCES and str(key) not in ids:
                raise ConfigError(
                    f"config error: preprocess.{key}: no source has this id (sources: {', '.join(ids)}; "
                    f"'{ALL_SOURCES}' applies to all)"
                )
            if not isinstance(value, dict | PreprocessConfig):
                raise ConfigError(
                    f"config error: preprocess.{key}: expected a mapping of settings, e.g. {{gamma: 1.8}}, "
                    f"got {value!r}"
                )
        return {str(k): val for k, val in v.items()}

    @model_validator(mode="after")
    def _sink_sources(self) -> Config:
        check_sink_sources(self.sinks, [s.id for s in self.sources])
        return self


def load_config(path: str | Path | None, overrides: Sequence[str] = (), *,
                env: Mapping[str, str] | None = None, base: Mapping[str, Any] | None = None) -> Config:
    """Read YAML ``path`` (or start from ``base``), apply ``--set`` overrides, resolve
    ``${ENV:NAME}`` from ``env`` and validate. Raises ConfigError."""
    label = str(path) if path is not None else "config"
    data: Any = copy.deepcopy(dict(base or {}))
    if path is not None:
        data = read_yaml_mapping(path, "config file")
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set transport.hwm=8")
        _set_dotted(data, key.strip(), yaml.safe_load(raw) if raw else "")
    used: set[str] = set()
    data = _resolve_env(data, env if env is not None else {}, "", used)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"config error in {label}: {_describe(exc)}") from None
    config._env_names = frozenset(used)
    _check_split(config)
    return config


def with_source(config: Config, definition: Any, *, env: Mapping[str, str], label: str,
                index: int | None = None) -> Config:
    """``config`` with one more source (or source ``index`` replaced), validated exactly as
    ``load_config`` validates a file that lists it there: ``${ENV:NAME}`` resolved from
    ``env``, every model and cross-check, and the same one-line ConfigError naming the
    dotted key (``sources.N.url``), labelled ``label`` instead of the file name."""
    if not isinstance(definition, dict):
        raise ConfigError(f"config error in {label}: a source is a mapping of keys, e.g. "
                          f"{{id: cam3, type: rtsp, url: 'rtsp://…'}} (got {type(definition).__name__})")
    data = config.model_dump(mode="json")
    sources = list(data["sources"])
    at = len(sources) if index is None else index
    used: set[str] = set()
    resolved = _resolve_env(definition, env, f"sources.{at}", used)
    if index is None:
        sources.append(resolved)
    else:
        sources[index] = resolved
    data["sources"] = sources
    try:
        new = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"config error in {label}: {_describe(exc)}") from None
    new._env_names = config.env_names | used
    return new


def _check_split(config: Config) -> None:
    """Structural checks at load (no file is read): ConfigError naming the key."""
    sp = config.split
    if sp is None:
        return
    if sp.after not in config.pipeline:
        raise ConfigError(
            f"config error: split.after: {sp.after!r} is not a stage of the pipeline "
            f"({', '.join(config.pipeline) or 'empty'}); to send straight from the capture, "
            "put 'passthrough' first and split after it"
        )
    if config.pipeline.count(sp.after) > 1:
        raise ConfigError(f"config error: split.after: {sp.after!r} appears more than once in the pipeline")
    if config.transport.pixels != "inline":
        raise ConfigError("config error: transport.pixels: must be 'inline' when split is set "
                          "(shared memory does not cross hosts)")


def read_yaml_mapping(path: str | Path, what: str, example: str = "") -> dict[str, Any]:
    """A YAML file whose top level is a mapping; ConfigError naming ``what`` and the path otherwise."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {p} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {p}: the top level must be a mapping of keys{example}")
    return data


def validate_section(model: type[_M], data: Mapping[str, Any] | _M, key: str) -> _M:
    """Validate a stage's or sink's own section (e.g. ``detect``, ``sinks.publish``)
    against its model; errors name the dotted key under ``key``. A section that is
    already a ``model`` (from a loaded Config) is returned as it is."""
    if isinstance(data, model):
        return data
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(f"config error: {key}.{_describe(exc, model)}") from None


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"--set {key}: {'.'.join(parts[:i]) or 'top'} has {len(node)} items, no index {part!r}")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise ConfigError(f"--set {key}: {'.'.join(parts[:i])} is a value, not a section")


def _resolve_env(node: Any, env: Mapping[str, str], where: str, used: set[str]) -> Any:
    """``node`` with every ``${ENV:NAME}`` replaced; the names go into ``used``."""
    if isinstance(node, dict):
        return {k: _resolve_env(v, env, f"{where}.{k}" if where else str(k), used) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve_env(v, env, f"{where}.{i}", used) for i, v in enumerate(node)]
    if isinstance(node, str):
        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in env:
                raise ConfigError(f"config error: {where}: environment variable {name} is not set")
            used.add(name)
            return env[name]

        return _ENV_REF.sub(sub, node)
    return node


def _describe(exc: ValidationError, root: type[BaseModel] | None = None) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "top level"
    kind = err["type"]
    value = err.get("input")
    if kind == "extra_forbidden":
        parent_loc = err["loc"][:-1]
        allowed = _allowed_keys(parent_loc, root or Config)
        return f"{key}: unknown key" + (f" (allowed: {', '.join(allowed)})" if allowed else "")
    if kind == "missing":
        return f"{key}: required key is missing"
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return f"{key}: {value!r} is not allowed (allowed: {expected})"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{key}: {msg} (got {value!r})"


def _allowed_keys(loc: Sequence[Any], root: type[BaseModel]) -> list[str]:
    model: Any = root
    skip = False
    for part in loc:
        if isinstance(part, int) or skip:
            skip = False
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        args = getattr(ann, "__args__", None)
        if getattr(ann, "__origin__", None) is dict and args:
            model, skip = args[1], True  # a mapping of names (e.g. source ids) to models
        else:
            model = args[0] if args and isinstance(args[0], type) else ann
    fields = getattr(model, "model_fields", None)
    return sorted(fields) if fields else []
