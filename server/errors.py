"""Domain errors of the server, each carrying the gRPC status it becomes.

Only the servicer turns them into a status; everything below it raises these.
"""

from __future__ import annotations

import grpc


class TranscriberFault(Exception):
    """An error whose message is meant for the caller."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidRequest(TranscriberFault):
    """The request breaks the contract: say what to fix."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class Overloaded(TranscriberFault):
    """Every stream slot is busy."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Draining(TranscriberFault):
    """The server is shutting down; the caller should reconnect elsewhere."""

    code = grpc.StatusCode.UNAVAILABLE
