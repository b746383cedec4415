"""A real transcriber server process around FakeEngine: `python -m tests.fake_server [server flags]`.

For tests that must kill -9, SIGTERM or isolate (network namespace) a server where the model is not
the thing under test. `--fake-delay-s` makes each decode take that long.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from transcriber_server.app import TranscriberApp
from transcriber_server.settings import ServerSettings

from .fakes import FakeEngine


async def serve(settings: ServerSettings, delay_s: float) -> None:
    app = TranscriberApp(settings, FakeEngine(delay_s))
    await app.start()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await stop.wait()
    await app.stop(settings.grace_s)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--fake-delay-s", type=float, default=0.0)
    own, rest = parser.parse_known_args(argv)
    settings = ServerSettings.load(rest)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(settings, own.fake_delay_s))


if __name__ == "__main__":
    main(sys.argv[1:])
