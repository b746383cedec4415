"""transcriber-server: parse flags into ServerSettings, set up logging, serve."""

from __future__ import annotations

import asyncio
import logging
import sys

from .app import serve
from .settings import ServerSettings


def main(argv: list[str] | None = None) -> None:
    settings = ServerSettings.load(argv)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(settings))
    except (ValueError, RuntimeError) as error:  # a model that cannot load, a port in use: said once, plainly
        logging.getLogger("transcriber_server").error("%s", error)
        sys.exit(2)


if __name__ == "__main__":
    main()
