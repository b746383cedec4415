"""Regenerate the Python stubs in sdk/transcriber_sdk/proto from protos/.

The proto is staged under transcriber_sdk/proto/ so that the generated imports
are package-absolute (`from transcriber_sdk.proto.transcriber.v1 import ...`).
A test regenerates into a temporary folder and fails on any difference.

Usage: python scripts/gen_protos.py [--out DIR]   (DIR defaults to sdk/)
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import sys
import tempfile

import google.rpc.status_pb2
import grpc_tools
from grpc_tools import protoc

REPO = pathlib.Path(__file__).resolve().parent.parent
PROTO = pathlib.Path("transcriber/v1/transcriber.proto")
STAGED_PREFIX = pathlib.Path("transcriber_sdk/proto")


def generate(out_dir: pathlib.Path) -> None:
    """Writes *_pb2.py, *_pb2_grpc.py and *_pb2.pyi under out_dir/transcriber_sdk/proto."""
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    # google/rpc/status.proto ships inside googleapis-common-protos.
    googleapis = pathlib.Path(google.rpc.status_pb2.__file__).parent.parent.parent
    with tempfile.TemporaryDirectory() as staging:
        staged = pathlib.Path(staging) / STAGED_PREFIX / PROTO
        staged.parent.mkdir(parents=True)
        shutil.copyfile(REPO / "protos" / PROTO, staged)
        out_dir.mkdir(parents=True, exist_ok=True)
        code = protoc.main([
            "grpc_tools.protoc",
            f"-I{staging}",
            f"-I{well_known}",
            f"-I{googleapis}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(STAGED_PREFIX / PROTO),
        ])
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=REPO / "sdk")
    generate(parser.parse_args(argv).out)


if __name__ == "__main__":
    main(sys.argv[1:])
