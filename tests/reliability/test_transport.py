"""Transport settings that must work together: keepalive between SDK and server, and TLS with a test CA."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import grpc
import pytest
import trustme

from transcriber_sdk import AuthenticationError, Client, ClientSettings, EndpointUnavailableError, chunked
from transcriber_sdk._async_client import channel_options
from transcriber_sdk.proto.transcriber.v1 import transcriber_pb2 as pb
from transcriber_sdk.proto.transcriber.v1 import transcriber_pb2_grpc as pb_grpc
from transcriber_server.settings import ServerSettings

from ..conftest import ServerThread
from ..fakes import FakeEngine, word_audio, words_of

WORDS = [5, 3, 8, 1, 9]


def test_default_keepalive_of_the_sdk_is_what_the_server_accepts():
    client, server = ClientSettings(), ServerSettings()
    assert client.keepalive_s >= server.min_ping_interval_s
    # A dead server is noticed within half a minute, well before any deadline of a long stream.
    assert client.keepalive_s + client.keepalive_timeout_s <= 30


async def hold_quiet_stream(address: str, keepalive_s: float, hold_s: float,
                            keepalive_timeout_s: float = 2.0) -> grpc.StatusCode:
    """Opens a stream, sends nothing for `hold_s` while the channel pings every `keepalive_s`, then ends
    it; returns its status."""
    options = channel_options(replace(ClientSettings(), keepalive_s=keepalive_s,
                                      keepalive_timeout_s=keepalive_timeout_s))

    async def requests() -> AsyncIterator[pb.StreamingTranscribeRequest]:
        yield pb.StreamingTranscribeRequest(config=pb.StreamingConfig())
        await asyncio.sleep(hold_s)

    async with grpc.aio.insecure_channel(address, options=options) as channel:
        call = pb_grpc.TranscriberStub(channel).StreamingTranscribe(requests(), timeout=hold_s + 10)
        try:
            async for _ in call:
                pass
        except grpc.aio.AioRpcError as error:
            return error.code()
        return grpc.StatusCode.OK


@pytest.mark.parametrize("client_ping_s, server_min_s, survives", [
    (2.0, 1.0, True),  # pings no closer than the server allows: the quiet stream lives
    (0.5, 3.0, False),  # negative control: the server's ping policy is in force and cuts a chatty client
])
def test_keepalive_pings_within_the_servers_policy_keep_a_quiet_stream(client_ping_s, server_min_s, survives):
    server = ServerThread(ServerSettings(max_streams=2, min_ping_interval_s=server_min_s, idle_timeout_s=60),
                          FakeEngine())
    try:
        started = time.monotonic()
        code = asyncio.run(hold_quiet_stream(server.address, client_ping_s, hold_s=7.0))
        if survives:
            assert code == grpc.StatusCode.OK
        else:
            assert code == grpc.StatusCode.UNAVAILABLE  # GOAWAY too_many_pings
            assert time.monotonic() - started < 7.0
    finally:
        server.stop()


@pytest.mark.soak
@pytest.mark.timeout(420)
def test_production_keepalive_keeps_a_quiet_stream_for_five_minutes():
    """T10 with the shipped defaults (SDK pings every 20 s, the server allows 10 s); only the idle timeout
    is raised, since the stream sends nothing."""
    server = ServerThread(ServerSettings(max_streams=2, idle_timeout_s=600), FakeEngine())
    try:
        defaults = ClientSettings()
        assert asyncio.run(hold_quiet_stream(server.address, defaults.keepalive_s, hold_s=300,
                                             keepalive_timeout_s=defaults.keepalive_timeout_s)) == grpc.StatusCode.OK
    finally:
        server.stop()


# -- TLS ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_server(ca: trustme.CA, tmp_path) -> Iterator[tuple[ServerThread, str]]:  # type: ignore[no-untyped-def]
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    cert, key, roots = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    leaf.private_key_pem.write_to_path(str(key))
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    ca.cert_pem.write_to_path(str(roots))
    server = ServerThread(ServerSettings(max_streams=2, auth_token="s3cret", tls_cert_file=str(cert),
                                         tls_key_file=str(key)), FakeEngine())
    yield server, str(roots)
    server.stop()


def test_tls_with_a_trusted_ca_and_the_token_transcribes(tls_server):
    server, roots = tls_server
    with Client([f"https://localhost:{server.app.port}"], token="s3cret", tls_root_certs=roots) as client:
        updates = list(client.stream(chunked(word_audio(WORDS), 16_000)))
    assert words_of(" ".join(update.text for update in updates if update.is_final)) == WORDS


def test_tls_without_the_token_is_unauthenticated(tls_server):
    server, roots = tls_server
    with Client([f"https://localhost:{server.app.port}"], tls_root_certs=roots) as client:
        with pytest.raises(AuthenticationError, match="missing bearer token"):
            list(client.stream(chunked(word_audio(WORDS), 16_000)))


def test_tls_with_an_untrusted_ca_does_not_connect(tls_server, tmp_path):
    server, _ = tls_server
    other_ca = tmp_path / "other.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    with Client([f"https://localhost:{server.app.port}"], token="s3cret", tls_root_certs=str(other_ca)) as client:
        with pytest.raises(EndpointUnavailableError):
            list(client.stream(chunked(word_audio(WORDS), 16_000)))


def test_plaintext_client_gets_no_answer_from_a_tls_server(tls_server):
    server, _ = tls_server
    with grpc.insecure_channel(server.address) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            pb_grpc.TranscriberStub(channel).GetStatus(pb.GetStatusRequest(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE

