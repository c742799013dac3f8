"""Settings of the HTTP service, applied when it starts serving (also after a restore)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields

API_KEY_ENV = "THAW_API_KEY"
MAX_PORT = 65535


class SettingsError(ValueError):
    """A server setting has an invalid value."""


@dataclass(frozen=True)
class ServerSettings:
    """Listening address, access and limits of the service. repr() leaves out the API key."""

    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str | None = field(default=None, repr=False)
    # Requests that may wait while one generates; one more gets 503.
    max_queue: int = 16
    # The model id that /v1/models lists; the GGUF file name when None.
    model_alias: str | None = None
    max_body_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        if not 0 <= self.port <= MAX_PORT:
            raise SettingsError(f"Invalid port {self.port}: pass a number from 0 to {MAX_PORT}.")
        if self.max_queue < 0:
            raise SettingsError(f"Invalid max_queue {self.max_queue}: pass 0 or more.")
        if self.max_body_bytes < 1:
            raise SettingsError(f"Invalid max_body_bytes {self.max_body_bytes}: pass 1 or more.")
        if self.api_key is not None and not self.api_key.strip():
            raise SettingsError("The API key is empty: pass a non-empty key or none.")
        if self.api_key is not None:
            # HTTP drops the whitespace around header values, so a key read with its
            # trailing newline from a secrets file could never match otherwise.
            object.__setattr__(self, "api_key", self.api_key.strip())
        if self.model_alias is not None and not self.model_alias.strip():
            raise SettingsError("The model alias is empty: pass a non-empty name or none.")

    @classmethod
    def from_env(cls, **overrides) -> "ServerSettings":
        """Build settings from OVERRIDES; an api_key that is None or absent comes from $THAW_API_KEY."""
        values = {name: value for name, value in overrides.items() if value is not None}
        if "api_key" not in values and os.environ.get(API_KEY_ENV):
            values["api_key"] = os.environ[API_KEY_ENV]
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ServerSettings":
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SettingsError(f"Unknown server settings {unknown}; known: {sorted(known)}.")
        return cls(**values)
