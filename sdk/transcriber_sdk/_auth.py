"""CallAuth: the credentials each call carries, per endpoint.

A static bearer token (servers started with TRANSCRIBER_AUTH_TOKEN), or a Google ID token whose
audience is the Cloud Run service URL, fetched with google-auth, cached, and renewed five minutes
before it expires. A token never travels in clear text to a host other than loopback.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import importlib.util
import ipaddress
import json
import logging
import time
from collections.abc import Callable

from ._core import channel_target
from .exceptions import AuthenticationError
from .settings import ClientSettings

log = logging.getLogger(__name__)

RENEW_BEFORE_S = 300.0
Metadata = tuple[tuple[str, str], ...]


def fetch_google_id_token(audience: str) -> str:
    """An ID token for `audience` from Application Default Credentials (blocking: run it in a thread).

    Raises:
        ImportError: google-auth is not installed (pip install 'transcriber-sdk[google]').
        google.auth.exceptions.GoogleAuthError: no usable credentials.
    """
    import google.auth.transport.requests  # optional extra: imported only when used
    import google.oauth2.id_token
    return google.oauth2.id_token.fetch_id_token(google.auth.transport.requests.Request(), audience)


def google_auth_installed() -> bool:
    try:
        return importlib.util.find_spec("google.oauth2.id_token") is not None
    except ImportError:  # no `google` package at all
        return False


class CallAuth:
    def __init__(self, settings: ClientSettings, *, fetch: Callable[[str], str] = fetch_google_id_token,
                 clock: Callable[[], float] = time.time) -> None:
        self._token = settings.token
        self._fetch = fetch
        self._clock = clock
        self._cache: dict[str, tuple[str, float]] = {}  # audience -> (token, expiry)
        self._locks: dict[str, asyncio.Lock] = {}
        self._warned: set[str] = set()
        self._id_token_for: dict[str, bool] = {}  # endpoint -> whether the ID token is required (else best effort)
        for endpoint in settings.endpoints:
            target, tls = channel_target(endpoint)
            if self._token and not tls and not is_loopback(target):
                raise ValueError(f"a token must not go in clear text to {endpoint}: use an https:// endpoint "
                                 "or a loopback address")
            if not tls or self._token or settings.google_id_token is False:
                continue
            if settings.google_id_token:
                self._id_token_for[endpoint] = True
            elif target.split(":")[0].endswith(".run.app") and google_auth_installed():
                self._id_token_for[endpoint] = False  # automatic: sent when it can be had

    async def metadata(self, endpoint: str) -> Metadata:
        """The call metadata for `endpoint`.

        Raises:
            AuthenticationError: an ID token was required (google_id_token=True) and could not be had.
        """
        if self._token:
            return (("authorization", f"Bearer {self._token}"),)
        if endpoint not in self._id_token_for:
            return ()
        required = self._id_token_for[endpoint]
        audience = "https://" + channel_target(endpoint)[0].removesuffix(":443")
        try:
            return (("authorization", f"Bearer {await self._id_token(audience)}"),)
        except Exception as error:  # ImportError, google.auth errors, network errors: all mean "no token"
            if required:
                raise AuthenticationError(
                    f"could not get a Google ID token for {audience}: {error}. ID tokens need a service account: "
                    "GOOGLE_APPLICATION_CREDENTIALS=<key file>, running on Google Cloud, or `gcloud auth "
                    "application-default login --impersonate-service-account <SA>`; or, for an hour, "
                    "TRANSCRIBER_TOKEN=$(gcloud auth print-identity-token)", endpoint=endpoint) from error
            if audience not in self._warned:
                self._warned.add(audience)
                log.warning("no Google ID token for %s (%s); calling without one", audience, error)
            return ()

    async def _id_token(self, audience: str) -> str:
        async with self._locks.setdefault(audience, asyncio.Lock()):
            cached = self._cache.get(audience)
            if cached and cached[1] - self._clock() > RENEW_BEFORE_S:
                return cached[0]
            token = await asyncio.to_thread(self._fetch, audience)
            self._cache[audience] = (token, jwt_expiry(token, default=self._clock() + 3600))
            return token


def jwt_expiry(token: str, default: float) -> float:
    """The `exp` claim of a JWT (not verified: the server verifies it), or `default`."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError, binascii.Error):
        return default


def is_loopback(target: str) -> bool:
    host = target.rsplit(":", 1)[0].strip("[]") if target.count(":") <= 1 or target.startswith("[") else target
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
