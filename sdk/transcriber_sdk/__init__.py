"""transcriber_sdk: stream speech to transcriber servers and get text back as it settles."""

from ._client import Client
from ._core import StreamOptions, chunked, read_pcm16
from .exceptions import (AuthenticationError, DeadlineExceededError, EndpointUnavailableError, InvalidRequestError,
                         OutOfRangeError, ServerBusyError, ServerError, ServiceError, StreamCancelledError,
                         TranscriberError)
from .models import Segment, Transcript, TranscriptUpdate, Word

__all__ = [
    "AuthenticationError",
    "Client",
    "DeadlineExceededError",
    "EndpointUnavailableError",
    "InvalidRequestError",
    "OutOfRangeError",
    "Segment",
    "ServerBusyError",
    "ServerError",
    "ServiceError",
    "StreamCancelledError",
    "StreamOptions",
    "Transcript",
    "TranscriptUpdate",
    "TranscriberError",
    "Word",
    "chunked",
    "read_pcm16",
]
