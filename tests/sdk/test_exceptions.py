"""Every non-OK status code has an SDK exception; in-band errors win over the call's status."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import status_pb2

from transcriber_sdk import exceptions
from transcriber_sdk._core import to_updates
from transcriber_sdk.proto.transcriber.v1 import transcriber_pb2 as pb


def test_every_non_ok_status_code_is_mapped():
    missing = [code for code in grpc.StatusCode if code is not grpc.StatusCode.OK
               and code not in exceptions.STATUS_TO_ERROR]
    assert not missing


@pytest.mark.parametrize("code, kind", [
    (grpc.StatusCode.INVALID_ARGUMENT, exceptions.InvalidRequestError),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, exceptions.ServerBusyError),
    (grpc.StatusCode.UNAVAILABLE, exceptions.EndpointUnavailableError),
    (grpc.StatusCode.INTERNAL, exceptions.ServerError),
    (grpc.StatusCode.UNAUTHENTICATED, exceptions.AuthenticationError),
])
def test_in_band_error_becomes_the_typed_exception(code, kind):
    response = pb.StreamingTranscribeResponse(error=status_pb2.Status(code=code.value[0], message="why"))
    with pytest.raises(kind, match="why") as raised:
        to_updates(response, endpoint="host:1")
    assert raised.value.code is code and raised.value.endpoint == "host:1"
    assert isinstance(raised.value, exceptions.TranscriberError)
