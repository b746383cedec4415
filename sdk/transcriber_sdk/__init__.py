"""transcriber_sdk: stream speech to transcriber servers and get text back as it settles."""

from ._async_client import AsyncClient
from ._client import Client
from ._core import StreamOptions, chunked, read_pcm16
from .exceptions import (AuthenticationError, DeadlineExceededError, EndpointUnavailableError, InvalidRequestError,
                         OutOfRangeError, ServerBusyError, ServerError, ServiceError, StreamCancelledError,
                         StreamLimitError, TranscriberError)
from .models import EndpointStatus, Segment, Transcript, TranscriptUpdate, Word
from .settings import ClientSettings

__all__ = [
    "AsyncClient",
    "AuthenticationError",
    "Client",
    "ClientSettings",
    "DeadlineExceededError",
    "EndpointStatus",
    "EndpointUnavailableError",
    "InvalidRequestError",
    "OutOfRangeError",
    "Segment",
    "ServerBusyError",
    "ServerError",
    "ServiceError",
    "StreamCancelledError",
    "StreamLimitError",
    "StreamOptions",
    "Transcript",
    "TranscriptUpdate",
    "TranscriberError",
    "Word",
    "chunked",
    "read_pcm16",
]
