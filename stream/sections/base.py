"""The base of every config model: unknown keys are refused, values are frozen."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr

from stream.errors import ConfigError


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def secret_text(value: Any, key: str) -> Any:
    """A secret's raw value (a password, a token) must be text. Refused with a ConfigError naming
    ``key``, not a ValueError: pydantic's message would quote the value."""
    if value is not None and not isinstance(value, str | SecretStr):
        raise ConfigError(f"config error: {key}: must be a string (quote it in YAML, or use ${{ENV:NAME}})")
    return value


def reveal(value: SecretStr | None) -> str | None:
    """A secret in the JSON that takes the config to a worker (over stdin, never argv)."""
    return value.get_secret_value() if value is not None else None
