"""Installs the server the way Dockerfile.slim does, so the image and its smoke test install alike.

    python scripts/install_server.py deps   # the server's dependencies from setup.cfg, pinned by constraints.txt
    python scripts/install_server.py app    # the project itself, without touching the dependencies

Two steps so that a Docker build caches the dependency layer while the source changes.
"""

from __future__ import annotations

import configparser
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
PIP = [sys.executable, "-m", "pip", "install", "--no-cache-dir", "--disable-pip-version-check"]


def server_requirements() -> list[str]:
    """install_requires plus the `server` extra, as setup.cfg lists them."""
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    lines = config["options"]["install_requires"] + config["options.extras_require"]["server"]
    return [line.strip() for line in lines.splitlines() if line.strip()]


def main(argv: list[str]) -> None:
    if argv == ["deps"]:
        command = [*PIP, "-c", str(REPO / "constraints.txt"), *server_requirements()]
    elif argv == ["app"]:
        command = [*PIP, "--no-deps", str(REPO)]
    else:
        raise SystemExit(__doc__)
    subprocess.run(command, check=True)


if __name__ == "__main__":
    main(sys.argv[1:])
