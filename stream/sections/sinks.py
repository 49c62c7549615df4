"""The ``sinks`` section: jsonl, publish, record, live, restream (and their H.264 encoder).

A sink whose section is absent or empty (``{}``) is off; ``enabled: false`` turns
a configured one off. Every section is validated at load, enabled or not.
Secrets (the live token, a password in the restream url) never appear in an
error: those keys are checked before pydantic could quote them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_serializer, field_validator

from stream.errors import ConfigError
from stream.redact import mask_url
from stream.sections.base import StrictModel, reveal, secret_text
from stream.sections.mqtt import MqttConfig


class EncoderConfig(StrictModel):
    """codec: 'auto' (NVENC when it opens on this machine, else libx264) or a fixed encoder.
    preset: libx264 speed preset (ultrafast: 18-37 fps at 1080p on 2 busy CPU cores, veryfast: ~12);
    nvenc_preset: NVENC p1 (fastest) … p7 (best).
    crf: quality, 0–51, lower is better (libx264 crf, NVENC cq).
    bitrate_kbps: constant bitrate in kbit/s instead of crf (what RTSP servers
    and players prefer); None = quality-based."""

    codec: Literal["auto", "libx264", "h264_nvenc"] = "auto"
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"] = "ultrafast"
    nvenc_preset: Literal["p1", "p2", "p3", "p4", "p5", "p6", "p7"] = "p4"
    crf: int = Field(default=23, ge=0, le=51)
    bitrate_kbps: int | None = Field(default=None, ge=50, le=200_000)


class JsonlSinkConfig(StrictModel):
    path: str | None = None


class PublishConfig(StrictModel):
    """``sinks.publish``. endpoint: address to bind (tcp://HOST:PORT or ipc://PATH);
    hwm: messages queued per subscriber before PUB drops for it;
    curve_server_secret_key_file: NAME.key_secret (from ``stream keys gen``) turns
    CURVE on; curve_allowed_keys_dir / curve_allowed_keys: client public key files
    (*.key) allowed in; encode_masks: False sends objects without masks."""

    enabled: bool = True
    endpoint: str = "tcp://127.0.0.1:5560"
    hwm: int = Field(default=100, ge=1, le=1_000_000)
    curve_server_secret_key_file: str | None = None
    curve_allowed_keys_dir: str | None = None
    curve_allowed_keys: list[str] = []
    encode_masks: bool = True

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        if not v.startswith(("tcp://", "ipc://")):
            raise ValueError("must be tcp://HOST:PORT or ipc://PATH")
        return v


class RecordConfig(StrictModel):
    """``sinks.record`` (see stream.sinks.record for what each key does)."""

    enabled: bool = True
    root: str = "recordings"
    annotated: bool = True
    segment_s: float = Field(default=60.0, gt=0, le=86_400)
    fragment_s: float = Field(default=1.0, gt=0, le=60)
    max_age_s: float | None = Field(default=None, gt=0)
    max_size_mb: float | None = Field(default=None, gt=0)
    retention_interval_s: float = Field(default=10.0, gt=0)
    queue_size: int = Field(default=64, ge=1, le=10_000)
    masks: bool = True
    sources: list[str] | None = None
    encoder: EncoderConfig = EncoderConfig()


class LiveConfig(StrictModel):
    """``sinks.live``. max_fps: per source (pictures and object events); jpeg_quality: 1..100."""

    enabled: bool = True
    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(8080, ge=0, le=65535)
    token: SecretStr | None = None
    max_fps: float = Field(15.0, gt=0, le=120)
    jpeg_quality: int = Field(80, ge=1, le=100)

    @field_validator("token", mode="before")
    @classmethod
    def _token_is_text(cls, v: Any) -> Any:
        return secret_text(v, "sinks.live.token")

    @field_serializer("token", when_used="json")
    def _reveal_token(self, v: SecretStr | None) -> str | None:
        return reveal(v)


class RestreamConfig(StrictModel):
    """``sinks.restream`` (see stream.sinks.restream). url: rtsp(s)://[user:password@]host[:port]/path,
    ``{source}`` replaced by the source id."""

    enabled: bool = True
    url: str
    annotated: bool = True
    sources: list[str] | None = None
    transport: Literal["tcp", "udp"] = "tcp"
    keyframe_s: float = Field(default=1.0, gt=0, le=30)
    queue_size: int = Field(default=8, ge=1, le=1000)
    io_timeout_s: float = Field(default=5.0, gt=0, le=120)
    retry_initial_s: float = Field(default=1.0, gt=0, le=600)
    retry_max_s: float = Field(default=30.0, gt=0, le=3600)
    encoder: EncoderConfig = EncoderConfig(bitrate_kbps=4000)  # type: ignore[call-arg]

    @field_validator("url", mode="before")
    @classmethod
    def _rtsp_url(cls, v: Any) -> Any:
        check_url(str(v))  # ConfigError with the password masked
        return str(v)


def check_url(url: str, key: str = "sinks.restream.url") -> None:
    """Raise ConfigError (with the url masked) unless ``url`` is rtsp(s)://host[:port]/…"""
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("rtsp", "rtsps") and bool(parts.hostname)
        _ = parts.port
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(
            f"config error: {key}: {mask_url(url)!r} is not an RTSP url "
            "(expected rtsp://[user:password@]host[:port]/path)"
        )


class SinksConfig(StrictModel):
    """Where frames leave the pipeline. A section left out (or ``{}``) is off."""

    jsonl: JsonlSinkConfig = JsonlSinkConfig()
    publish: PublishConfig | None = None
    record: RecordConfig | None = None
    live: LiveConfig | None = None
    restream: RestreamConfig | None = None
    mqtt: MqttConfig | None = None
    # A new sink adds its section here (typed, ``X | None = None``) and its module to
    # stream.stages.output.SINK_MODULES.

    @field_validator("publish", "record", "live", "restream", "mqtt", mode="before")
    @classmethod
    def _empty_is_off(cls, v: Any) -> Any:
        return None if v is None or (isinstance(v, dict) and not v) else v


def check_sink_sources(sinks: SinksConfig, source_ids: Sequence[str]) -> None:
    """What needs the source list: record's and restream's ``sources`` must be known ids,
    and a restream url without ``{source}`` can push only one source. Raises ConfigError."""
    known = list(source_ids)
    if sinks.record is not None:
        unknown = sorted(set(sinks.record.sources or ()) - set(known))
        if unknown:
            raise ConfigError(
                f"config error: sinks.record.sources: {', '.join(unknown)} not among the configured sources "
                f"({', '.join(known)})"
            )
    r = sinks.restream
    if r is not None:
        unknown = sorted(set(r.sources or ()) - set(known))
        if unknown:
            raise ConfigError(
                f"config error: sinks.restream.sources: {', '.join(unknown)} not among the configured sources "
                f"({', '.join(known)})"
            )
        chosen = r.sources if r.sources is not None else known
        if "{source}" not in r.url and len(chosen) > 1:
            raise ConfigError(
                f"config error: sinks.restream.url: {mask_url(r.url)!r} has no {{source}} but "
                f"{len(chosen)} sources would be pushed ({', '.join(chosen)}); add {{source}} to the "
                "url's path or list one source in sinks.restream.sources"
            )
