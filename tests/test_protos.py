"""The committed stubs are exactly what grpcio-tools makes from the proto (never hand-edited)."""

from __future__ import annotations

import filecmp
import importlib.util
import pathlib

from .conftest import REPO


def test_generated_stubs_match_the_proto(tmp_path: pathlib.Path):
    spec = importlib.util.spec_from_file_location("gen_protos", REPO / "scripts" / "gen_protos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.generate(tmp_path)
    generated = tmp_path / "transcriber_sdk" / "proto" / "transcriber" / "v1"
    committed = REPO / "sdk" / "transcriber_sdk" / "proto" / "transcriber" / "v1"
    names = sorted(path.name for path in generated.iterdir())
    assert names == ["transcriber_pb2.py", "transcriber_pb2.pyi", "transcriber_pb2_grpc.py"]
    stale = [name for name in names if not filecmp.cmp(generated / name, committed / name, shallow=False)]
    assert not stale, f"{stale} differ from protos/: run python scripts/gen_protos.py"
