"""The SDK's error tree and the one table from gRPC status codes to it.

Callers never see a raw grpc.RpcError: `from_rpc_error` translates it once.
"""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status


class TranscriberError(Exception):
    """Base of every SDK error: `.code` (grpc.StatusCode), `.endpoint`, `.details`, and from our server
    `.reason` (google.rpc.ErrorInfo, e.g. "SERVER_AT_CAPACITY") and `.retry_after_s` (google.rpc.RetryInfo)."""

    def __init__(self, details: str, *, code: grpc.StatusCode | None = None, endpoint: str | None = None,
                 reason: str = "", retry_after_s: float | None = None) -> None:
        where = f" [{endpoint}]" if endpoint else ""
        status = f"{code.name}: " if code is not None else ""
        super().__init__(f"{status}{details}{where}")
        self.code = code
        self.endpoint = endpoint
        self.details = details
        self.reason = reason
        self.retry_after_s = retry_after_s


class InvalidRequestError(TranscriberError):
    """The request broke the contract (bad config, audio format, language, model); fix the call."""


class OutOfRangeError(TranscriberError):
    """The stream reached a limit of its length: maximum duration, or no audio for the idle timeout.
    The SDK continues the stream on a new call by itself; a raw gRPC caller opens a new stream."""


class StreamLimitError(TranscriberError):
    """The client broke a per-stream limit (too many messages per second, responses not read): a bug in
    the calling code, not a busy server, so no other endpoint is tried."""


class AuthenticationError(TranscriberError):
    """Credentials were missing or rejected."""


class DeadlineExceededError(TranscriberError):
    """The caller's deadline passed."""


class StreamCancelledError(TranscriberError):
    """The call was cancelled."""


class ServiceError(TranscriberError):
    """The service could not do the work (busy, unavailable, or failed)."""


class ServerBusyError(ServiceError):
    """Every stream slot of the endpoint was taken."""


class EndpointUnavailableError(ServiceError):
    """The endpoint is down, unreachable or draining."""


class ServerError(ServiceError):
    """An unexpected failure on the server (it logged the details)."""


STATUS_TO_ERROR: dict[grpc.StatusCode, type[TranscriberError]] = {
    grpc.StatusCode.CANCELLED: StreamCancelledError,
    grpc.StatusCode.UNKNOWN: ServerError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequestError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.NOT_FOUND: InvalidRequestError,
    grpc.StatusCode.ALREADY_EXISTS: InvalidRequestError,
    grpc.StatusCode.PERMISSION_DENIED: AuthenticationError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ServerBusyError,
    grpc.StatusCode.FAILED_PRECONDITION: InvalidRequestError,
    grpc.StatusCode.ABORTED: ServerError,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRangeError,
    grpc.StatusCode.UNIMPLEMENTED: ServerError,
    grpc.StatusCode.INTERNAL: ServerError,
    grpc.StatusCode.UNAVAILABLE: EndpointUnavailableError,
    grpc.StatusCode.DATA_LOSS: ServerError,
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationError,
}


# RESOURCE_EXHAUSTED is "busy" only when the server says so; these reasons are the caller's doing.
CLIENT_LIMIT_REASONS = frozenset({"TOO_MANY_MESSAGES", "CLIENT_NOT_READING"})


def error_for(code: grpc.StatusCode, details: str, endpoint: str | None = None, *, reason: str = "",
              retry_after_s: float | None = None) -> TranscriberError:
    """The SDK error for a status code and, from our server, its ErrorInfo reason."""
    kind = StreamLimitError if reason in CLIENT_LIMIT_REASONS else STATUS_TO_ERROR.get(code, ServerError)
    return kind(details, code=code, endpoint=endpoint, reason=reason, retry_after_s=retry_after_s)


def from_status(status: status_pb2.Status, endpoint: str | None = None) -> TranscriberError:
    """Translates a google.rpc.Status (the in-band error, or a call's rich status)."""
    reason, retry_after_s = "", None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_after_s = retry.retry_delay.ToMilliseconds() / 1000
    return error_for(from_status_code(status.code), status.message or "no details", endpoint, reason=reason,
                     retry_after_s=retry_after_s)


def from_rpc_error(error: grpc.RpcError, endpoint: str | None = None) -> TranscriberError:
    """Translates a failed call, with the rich details of its trailers where the server sent them; keep
    the cause with `raise ... from error`."""
    # grpc.Call (blocking API) and grpc.aio.AioRpcError both carry code(), details() and trailers.
    if not isinstance(error, (grpc.Call, grpc.aio.AioRpcError)):
        return error_for(grpc.StatusCode.UNKNOWN, str(error), endpoint)
    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except ValueError:  # trailers that disagree with the status: trust the status
        status = None
    if status is not None:
        return from_status(status, endpoint)
    code = error.code()
    return error_for(code, error.details() or code.name.lower(), endpoint)


def from_status_code(value: int) -> grpc.StatusCode:
    """The grpc.StatusCode of a numeric google.rpc.Status code."""
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code
    return grpc.StatusCode.UNKNOWN
