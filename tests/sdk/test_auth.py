"""CallAuth: static tokens never in clear text off loopback; Google ID tokens per Cloud Run audience, cached
and renewed before they expire."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from transcriber_sdk import AuthenticationError, ClientSettings
from transcriber_sdk._auth import CallAuth, is_loopback, jwt_expiry

RUN_URL = "https://transcriber-slim-1-abc-ew.a.run.app"


def jwt(expiry: float, audience: str) -> str:
    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")
    return f"{part({'alg': 'RS256'})}.{part({'exp': expiry, 'aud': audience})}.signature"


class Fetcher:
    def __init__(self, clock: list[float]) -> None:
        self.clock = clock
        self.audiences: list[str] = []

    def __call__(self, audience: str) -> str:
        self.audiences.append(audience)
        return jwt(self.clock[0] + 3600, audience)


def test_a_static_token_goes_to_loopback_and_tls_only():
    for endpoint in ("127.0.0.1:8080", "localhost:1", "[::1]:50051", RUN_URL):
        auth = CallAuth(ClientSettings(endpoints=(endpoint,), token="t"))
        assert asyncio.run(auth.metadata(endpoint)) == (("authorization", "Bearer t"),)
    with pytest.raises(ValueError, match="clear text to 10.0.0.5:8080"):
        CallAuth(ClientSettings(endpoints=("10.0.0.5:8080",), token="t"))


def test_id_tokens_are_fetched_per_service_cached_and_renewed_before_expiry():
    clock = [1_000_000.0]
    fetcher = Fetcher(clock)
    other = "https://transcriber-slim-2-abc-ew.a.run.app"
    auth = CallAuth(ClientSettings(endpoints=(RUN_URL, other), google_id_token=True), fetch=fetcher,
                    clock=lambda: clock[0])

    async def token(endpoint: str) -> str:
        return dict(await auth.metadata(endpoint))["authorization"]

    first = asyncio.run(token(RUN_URL))
    assert asyncio.run(token(RUN_URL)) == first
    asyncio.run(token(other))
    assert fetcher.audiences == [RUN_URL, other], "audience = the service URL, one fetch each"
    clock[0] += 3600 - 299  # less than 5 minutes left
    assert asyncio.run(token(RUN_URL)) != first
    assert fetcher.audiences.count(RUN_URL) == 2


def test_a_required_id_token_that_cannot_be_had_is_an_authentication_error():
    def no_credentials(audience: str) -> str:
        raise RuntimeError("Could not automatically determine credentials")

    auth = CallAuth(ClientSettings(endpoints=(RUN_URL,), google_id_token=True), fetch=no_credentials)
    with pytest.raises(AuthenticationError, match="application-default login"):
        asyncio.run(auth.metadata(RUN_URL))


def test_automatic_id_tokens_are_best_effort_and_only_for_cloud_run(caplog):
    def no_credentials(audience: str) -> str:
        raise RuntimeError("no credentials")

    auth = CallAuth(ClientSettings(endpoints=(RUN_URL, "https://example.com", "127.0.0.1:1")), fetch=no_credentials)
    assert asyncio.run(auth.metadata(RUN_URL)) == ()
    assert "no Google ID token" in caplog.text
    fetched: list[str] = []
    auth = CallAuth(ClientSettings(endpoints=("https://example.com", "127.0.0.1:1")),
                    fetch=lambda audience: fetched.append(audience) or "x")
    assert asyncio.run(auth.metadata("https://example.com")) == ()
    assert fetched == []


def test_helpers():
    assert jwt_expiry(jwt(123.0, "a"), default=5) == 123.0
    assert jwt_expiry("not a jwt", default=5) == 5
    assert is_loopback("127.0.0.2:80") and is_loopback("localhost:1") and not is_loopback("example.com:80")
