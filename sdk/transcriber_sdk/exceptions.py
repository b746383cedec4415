"""The SDK's error tree and the one table from gRPC status codes to it.

Callers never see a raw grpc.RpcError: `from_rpc_error` translates it once.
"""

from __future__ import annotations

import grpc


class TranscriberError(Exception):
    """Base of every SDK error: `.code` (grpc.StatusCode), `.endpoint`, `.details`."""

    def __init__(self, details: str, *, code: grpc.StatusCode | None = None, endpoint: str | None = None) -> None:
        where = f" [{endpoint}]" if endpoint else ""
        status = f"{code.name}: " if code is not None else ""
        super().__init__(f"{status}{details}{where}")
        self.code = code
        self.endpoint = endpoint
        self.details = details


class InvalidRequestError(TranscriberError):
    """The request broke the contract (bad config, audio format, language, model); fix the call."""


class OutOfRangeError(TranscriberError):
    """The server answered OUT_OF_RANGE (a stream limit; the server sets none yet)."""


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


def error_for(code: grpc.StatusCode, details: str, endpoint: str | None = None) -> TranscriberError:
    """The SDK error for a status code."""
    return STATUS_TO_ERROR.get(code, ServerError)(details, code=code, endpoint=endpoint)


def from_rpc_error(error: grpc.RpcError, endpoint: str | None = None) -> TranscriberError:
    """Translates a failed call; keep the cause with `raise ... from error`."""
    # grpc.Call (blocking API) and grpc.aio.AioRpcError both carry code() and details().
    has_status = isinstance(error, (grpc.Call, grpc.aio.AioRpcError))
    code = error.code() if has_status else grpc.StatusCode.UNKNOWN  # type: ignore[union-attr]
    details = error.details() if has_status else str(error)  # type: ignore[union-attr]
    return error_for(code, details or code.name.lower(), endpoint)


def from_status_code(value: int) -> grpc.StatusCode:
    """The grpc.StatusCode of a numeric google.rpc.Status code."""
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code
    return grpc.StatusCode.UNKNOWN
