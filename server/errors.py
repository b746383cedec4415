"""Domain errors of the server, each carrying the gRPC status it becomes and a machine-readable reason.

Only the servicer turns them into a status; everything below it raises these. The reasons are part of
the wire contract (google.rpc.ErrorInfo in the status details): clients act on them, never on text.
"""

from __future__ import annotations

import grpc

ERROR_DOMAIN = "transcriber.v1"


class TranscriberFault(Exception):
    """An error whose message is meant for the caller."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = "INTERNAL"
    retry_after_s: float | None = None  # sent as google.rpc.RetryInfo: come back to this server after it


class InvalidRequest(TranscriberFault):
    """The request breaks the contract: say what to fix."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_REQUEST"


class Overloaded(TranscriberFault):
    """Every stream slot is busy: try another server now, this one after a short while."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "SERVER_AT_CAPACITY"
    retry_after_s = 2.0


class Draining(TranscriberFault):
    """The server is shutting down; the caller should reconnect elsewhere."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "DRAINING"


class StreamTooLong(TranscriberFault):
    """The stream reached the server's maximum duration; its words so far are final: open a new stream."""

    code = grpc.StatusCode.OUT_OF_RANGE
    reason = "MAX_STREAM_DURATION"


class IdleTimeout(TranscriberFault):
    """No message for too long; the words received are final."""

    code = grpc.StatusCode.OUT_OF_RANGE
    reason = "IDLE_TIMEOUT"


class TooManyMessages(TranscriberFault):
    """The client sends more messages per second than allowed: a client bug, not a busy server."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "TOO_MANY_MESSAGES"


class ClientNotReading(TranscriberFault):
    """The client stopped reading responses: a client bug, not a busy server."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "CLIENT_NOT_READING"


class Unauthenticated(TranscriberFault):
    """The call lacks the server's bearer token."""

    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class ServerBug(TranscriberFault):
    """Anything unexpected; the details are in the server log, not in the status."""

    code = grpc.StatusCode.INTERNAL
    reason = "INTERNAL"
