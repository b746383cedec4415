"""The blocking Client against loopback servers: endpoints, refusals that move on, local checks."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest

from transcriber_sdk import Client, EndpointUnavailableError, InvalidRequestError, chunked
from transcriber_sdk._core import channel_target
from transcriber_server.settings import ServerSettings

from ..conftest import ServerThread
from ..fakes import FakeEngine, word_audio, words_of
from ..server.test_servicer import open_stream, wait_for

WORDS = [2, 7, 1, 8, 2, 8]


@pytest.mark.parametrize("endpoint, target", [
    ("127.0.0.1:8080", ("127.0.0.1:8080", False)),
    ("https://transcriber-slim-1-abc.a.run.app", ("transcriber-slim-1-abc.a.run.app:443", True)),
    ("https://host.example:8443/", ("host.example:8443", True)),
])
def test_endpoint_forms(endpoint, target):
    assert channel_target(endpoint) == target


def test_other_schemes_are_refused():
    with pytest.raises(ValueError, match="host:port"):
        channel_target("http://host:80")


def test_a_stream_refused_as_busy_moves_to_the_next_endpoint_with_all_its_audio():
    busy = ServerThread(replace(ServerSettings(), max_streams=1), FakeEngine())
    free = ServerThread(ServerSettings(), FakeEngine())
    stop = threading.Event()
    channel, held = open_stream(busy.address, stop)  # takes the busy server's only slot
    try:
        assert wait_for(lambda: busy.app.servicer.admission.active == 1)
        with Client([busy.address, free.address]) as client:
            updates = list(client.stream(chunked(word_audio(WORDS), 16000)))
        assert words_of(" ".join(update.text for update in updates if update.is_final)) == WORDS
    finally:
        stop.set()
        list(held)
        channel.close()
        busy.stop()
        free.stop()


def test_all_endpoints_down_names_each_one():
    with Client(["127.0.0.1:1", "127.0.0.1:2"], timeout_s=5) as client:
        with pytest.raises(EndpointUnavailableError) as raised:
            list(client.stream(iter([b"\0" * 3200])))
    assert "127.0.0.1:1" in str(raised.value) and "127.0.0.1:2" in str(raised.value)


def test_an_oversized_chunk_is_refused_before_sending(fake_server):
    with Client([fake_server.address]) as client, pytest.raises(InvalidRequestError, match="limit is 1048576"):
        list(client.stream(iter([word_audio([1]), b"\0" * (2 << 20)])))
