"""``sinks.mqtt``: the MQTT sink's section (see stream.sinks.mqtt and docs/mqtt.md),
validated at load like every sink's; errors name the dotted key and never show the password.
Whether the TLS files exist is checked when the sink is built (on the host that runs it)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr, field_serializer, field_validator, model_validator

from stream.errors import ConfigError
from stream.sections.base import StrictModel, reveal, secret_text


class MqttTlsConfig(StrictModel):
    """``sinks.mqtt.tls`` (present: TLS on). ca_file: PEM CA bundle to verify the broker
    (default: the system's); cert_file + key_file: a client certificate; insecure: skip
    the broker host name check (the certificate chain is still verified)."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False

    @model_validator(mode="after")
    def _client_certificate_is_a_pair(self) -> MqttTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError("config error: sinks.mqtt.tls: cert_file and key_file go together (a client certificate)")
        return self


class MqttConfig(StrictModel):
    """``sinks.mqtt``. host/port: the broker (port default 1883, 8883 with tls);
    topic_prefix: first topic level; availability_topic: default PREFIX/availability;
    client_id: default NAME-HOST-PID (unique per process, as brokers require);
    qos: for events and state (availability is always QoS 1, retained);
    update_interval_s: at most one update per track per interval (frame time);
    min_score_change: score change that makes an update; end_after_s: a track not seen
    this long ends (timeout) when its end was lost; include_masks: COCO RLE of the
    object's mask in new/update events; queue_size: events waiting for the broker
    before new ones are dropped; max_inflight: unacknowledged messages at once;
    close_timeout_s: how long close waits for queued events to go out."""

    enabled: bool = True
    host: str = Field("127.0.0.1", min_length=1)
    port: int | None = Field(None, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    tls: MqttTlsConfig | None = None
    client_id: str | None = Field(None, min_length=1, max_length=128)
    topic_prefix: str = "stream"
    availability_topic: str | None = None
    qos: Literal[0, 1, 2] = 1
    keepalive_s: int = Field(30, ge=5, le=3600)
    reconnect_min_s: int = Field(1, ge=1, le=60)
    reconnect_max_s: int = Field(30, ge=1, le=3600)
    update_interval_s: float = Field(1.0, ge=0, le=3600)
    min_score_change: float = Field(0.05, ge=0, le=1)
    end_after_s: float = Field(30.0, gt=0, le=86400)
    include_masks: bool = False
    queue_size: int = Field(1000, ge=1, le=1_000_000)
    max_inflight: int = Field(100, ge=1, le=10_000)
    close_timeout_s: float = Field(2.0, ge=0, le=60)

    @field_validator("password", mode="before")
    @classmethod
    def _password_is_text(cls, v: Any) -> Any:
        return secret_text(v, "sinks.mqtt.password")

    @model_validator(mode="after")
    def _password_needs_username(self) -> MqttConfig:
        if self.password is not None and self.username is None:
            raise ConfigError("config error: sinks.mqtt.password: set sinks.mqtt.username too (MQTT sends both)")
        return self

    @field_serializer("password", when_used="json")
    def _reveal_password(self, v: SecretStr | None) -> str | None:
        return reveal(v)

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if "://" in v or "/" in v or v != v.strip():
            raise ValueError("must be a host name or address alone (e.g. broker.lan); the port goes in port, TLS in tls")
        return v

    @field_validator("topic_prefix", "availability_topic")
    @classmethod
    def _topic(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not v or v.startswith("/") or v.endswith("/") or "//" in v:
            raise ValueError("must be topic levels separated by '/', without a leading or trailing '/'")
        if any(c in v for c in "+#\0"):
            raise ValueError("must not contain the wildcards '+' or '#'")
        return v
