"""BearerTokenInterceptor: the optional shared-token check, answered with UNAUTHENTICATED.

Health checks stay open: Cloud Run's startup probe and load balancers carry no token.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
from grpc_status import rpc_status

from transcriber_sdk.proto.transcriber.v1 import transcriber_pb2 as pb

from . import messages
from .errors import Unauthenticated

OPEN_PREFIXES = ("/grpc.health.v1.Health/",)
STREAMING_METHOD = "/transcriber.v1.Transcriber/StreamingTranscribe"


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Admits a call only with `authorization: Bearer <token>` metadata."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("an empty token would admit everyone")
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
                                handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        metadata = dict(handler_call_details.invocation_metadata or ())
        given = metadata.get("authorization", "")
        if hmac.compare_digest(given.encode() if isinstance(given, str) else given, self._expected):
            return handler
        reason = "invalid bearer token" if given else "missing bearer token"
        return _denial(handler, method, f"{reason}: send `authorization: Bearer <token>` metadata "
                                        "(TRANSCRIBER_TOKEN in the SDK)")


def _denial(handler: grpc.RpcMethodHandler, method: str, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` that refuses the call."""
    status = messages.error_status(Unauthenticated(message))
    codecs = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}

    async def refuse(request: object, context: grpc.aio.ServicerContext) -> None:
        await context.abort_with_status(rpc_status.to_status(status))

    async def refuse_stream(request: object, context: grpc.aio.ServicerContext) -> AsyncIterator[object]:
        if method == STREAMING_METHOD:  # our streaming contract: the status in band first (grpc/grpc#36066)
            yield pb.StreamingTranscribeResponse(error=status)
        await context.abort_with_status(rpc_status.to_status(status))

    if handler.response_streaming:
        factory = grpc.stream_stream_rpc_method_handler if handler.request_streaming else grpc.unary_stream_rpc_method_handler
        return factory(refuse_stream, **codecs)
    factory = grpc.stream_unary_rpc_method_handler if handler.request_streaming else grpc.unary_unary_rpc_method_handler
    return factory(refuse, **codecs)
