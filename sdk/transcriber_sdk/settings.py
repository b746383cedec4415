"""ClientSettings: every knob of the SDK, from arguments, then TRANSCRIBER_* variables, then defaults."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ._core import channel_target

ENV_PREFIX = "TRANSCRIBER_"
DEFAULT_ENDPOINT = "127.0.0.1:8080"


@dataclass(frozen=True)
class ClientSettings:
    # `host:port` is plaintext (local servers, compose); `https://NAME.a.run.app` is TLS on 443.
    endpoints: tuple[str, ...] = (DEFAULT_ENDPOINT,)
    # A static bearer token for servers started with TRANSCRIBER_AUTH_TOKEN. Never sent in clear
    # text to a host other than loopback.
    token: str = field(default="", repr=False)
    # Google ID tokens for https endpoints (Cloud Run IAM): None sends them when google-auth is installed,
    # no static token is set and the endpoint is a Cloud Run URL; True always (for https); False never.
    google_id_token: bool | None = None
    timeout_s: float | None = None  # deadline of one whole stream or file, failovers included
    replay_s: float = 60.0  # audio kept since the last settled point, to resend after a failover
    rollover_s: float = 55 * 60.0  # a call older than this moves to a new call at a final (Cloud Run: 60 min)
    eject_s: float = 1.0  # a failed endpoint sits out this long, doubling on each further failure
    max_eject_s: float = 30.0
    probe_timeout_s: float = 1.0  # health check before an ejected endpoint gets traffic again
    keepalive_s: float = 20.0  # the server accepts pings every 10 s or slower
    keepalive_timeout_s: float = 10.0
    # PEM file of the CAs that sign the servers' TLS certificates (https endpoints); empty: the system's roots.
    tls_root_certs: str = ""

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise ValueError("give at least one endpoint")
        for endpoint in self.endpoints:
            channel_target(endpoint)  # a bad form is named now, not at the first call
        if len(set(self.endpoints)) != len(self.endpoints):
            raise ValueError(f"endpoints repeat: {', '.join(self.endpoints)}")
        if self.replay_s < 30:
            raise ValueError("replay_s must be at least 30 s: a server may hold up to 25 s of unsettled speech")
        if self.rollover_s <= 0 or self.eject_s <= 0 or self.max_eject_s < self.eject_s:
            raise ValueError("need rollover_s > 0 and 0 < eject_s <= max_eject_s")
        if self.keepalive_s <= 0 or self.keepalive_timeout_s <= 0:
            raise ValueError("need keepalive_s > 0 and keepalive_timeout_s > 0")
        if self.tls_root_certs and not os.path.isfile(self.tls_root_certs):
            raise ValueError(f"tls_root_certs: no such file {self.tls_root_certs!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, **overrides: Any) -> ClientSettings:
        """Defaults, then TRANSCRIBER_* variables (TRANSCRIBER_ENDPOINTS is comma-separated), then
        `overrides` that are not None.

        Raises:
            ValueError: a variable or override has a bad value.
        """
        values: dict[str, Any] = {}
        for setting in fields(cls):
            raw = environ.get(ENV_PREFIX + setting.name.upper())
            if raw is not None and raw.strip():
                values[setting.name] = _parse(setting.name, str(setting.type), raw.strip())
        values.update({name: value for name, value in overrides.items() if value is not None})
        if isinstance(values.get("endpoints"), str):
            values["endpoints"] = split_endpoints(values["endpoints"])
        elif "endpoints" in values:
            values["endpoints"] = tuple(values["endpoints"])
        return replace(cls(), **values)


def split_endpoints(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _parse(name: str, kind: str, raw: str) -> Any:
    try:
        if "bool" in kind:
            lowered = raw.lower()
            if lowered in ("auto", "none"):
                return None
            if lowered not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                raise ValueError(raw)
            return lowered in ("1", "true", "yes", "on")
        if "float" in kind:
            return float(raw)
        if "tuple" in kind:
            return split_endpoints(raw)
        return raw
    except ValueError:
        raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {kind}") from None
