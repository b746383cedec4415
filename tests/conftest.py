"""Shared fixtures: servers on loopback (fake or real engine) and the speech set."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import pathlib
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace

import grpc
import pytest

from transcriber_server.app import TranscriberApp
from transcriber_server.engine import Engine
from transcriber_server.settings import ServerSettings

from .fakes import FakeEngine

REPO = pathlib.Path(__file__).resolve().parent.parent
SPEECH_DIR = pathlib.Path(os.environ.get("TRANSCRIBER_SPEECH_DIR", REPO.parent / "shared" / "speech"))
MULTILINGUAL_DIR = pathlib.Path(os.environ.get("TRANSCRIBER_MULTILINGUAL_DIR", REPO.parent / "shared" / "speech-multilingual"))


def free_port() -> int:
    """A loopback port nobody listens on, for a server started as a separate process."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerProcess:
    """`python -m transcriber_server` on 127.0.0.1:<free port> (the real model unless flags say otherwise),
    for tests that must kill -9 or SIGTERM a server. `module="tests.fake_server"` runs FakeEngine instead."""

    def __init__(self, *flags: str, ready_timeout_s: float = 60, module: str = "transcriber_server") -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.process = subprocess.Popen([sys.executable, "-m", module, "--host", "127.0.0.1",
                                         "--port", str(self.port), *flags],
                                        cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        with grpc.insecure_channel(self.address) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=ready_timeout_s)
            except grpc.FutureTimeoutError:
                self.kill()
                raise

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)


class ServerThread:
    """A TranscriberApp on 127.0.0.1:<free port>, run by its own event loop in a thread,
    so blocking SDK clients can call it from the test."""

    def __init__(self, settings: ServerSettings, engine: Engine) -> None:
        self._stopping: concurrent.futures.Future | None = None
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        # Metrics on a free port too: tests run many servers at once.
        local = replace(settings, host="127.0.0.1", port=0, metrics_port=min(settings.metrics_port, 0))
        self.app: TranscriberApp = self.call(self._start(local, engine))
        self.address = f"127.0.0.1:{self.app.port}"

    async def _start(self, settings: ServerSettings, engine: Engine) -> TranscriberApp:
        app = TranscriberApp(settings, engine)
        await app.start()
        return app

    def call(self, coroutine, timeout_s: float = 60):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    def tasks(self) -> int:
        """Tasks alive in the server's loop (to check that nothing leaks)."""
        async def count() -> int:
            return len(asyncio.all_tasks()) - 1
        return self.call(count())

    def begin_stop(self, grace_s: float) -> concurrent.futures.Future:
        """Starts the app's graceful stop (as SIGTERM would) and returns at once."""
        self._stopping = asyncio.run_coroutine_threadsafe(self.app.stop(grace_s), self.loop)
        return self._stopping

    def stop(self, grace_s: float = 0.5) -> None:
        (self._stopping or self.begin_stop(grace_s)).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@pytest.fixture
def settings() -> ServerSettings:
    return ServerSettings(max_streams=4, reflection=True)


@pytest.fixture
def fake_engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def fake_server(settings: ServerSettings, fake_engine: FakeEngine) -> Iterator[ServerThread]:
    server = ServerThread(settings, fake_engine)
    yield server
    server.stop()


def speech_set(folder: pathlib.Path, variable: str) -> dict[str, dict]:
    """A shared speech set's manifest by id (skips where the folder is absent, as in a user's clone)."""
    manifest = folder / "manifest.jsonl"
    if not manifest.exists():
        pytest.skip(f"speech set not found at {folder} (set {variable})")
    items = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    return {item["id"]: {**item, "path": str(folder / item["file"])} for item in items}


@pytest.fixture(scope="session")
def speech() -> dict[str, dict]:
    """The English speech set (../shared/speech)."""
    return speech_set(SPEECH_DIR, "TRANSCRIBER_SPEECH_DIR")


@pytest.fixture(scope="session")
def multilingual_speech() -> dict[str, dict]:
    """The multilingual speech set (../shared/speech-multilingual): ru, de, es, fr, pt, sv, ja, zh."""
    return speech_set(MULTILINGUAL_DIR, "TRANSCRIBER_MULTILINGUAL_DIR")
