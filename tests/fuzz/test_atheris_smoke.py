"""The atheris harnesses in fuzz/ run clean (issue #6; reliability.md T15).

CI runs each for 20,000 inputs from a fixed seed (a few seconds); the soak runs each for 1e6 inputs,
which T15 bounds at 5 minutes. A failing run leaves its crash input in pytest's tmp_path and prints
the harness's last output, which names the exception and the input (base64).

Run: pytest tests/fuzz/test_atheris_smoke.py; the soak: pytest -m soak tests/fuzz/test_atheris_smoke.py
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

pytest.importorskip("atheris")

FUZZ_DIR = pathlib.Path(__file__).resolve().parents[2] / "fuzz"
MAX_LEN = {"fuzz_audio.py": 16384, "fuzz_sdk_framing.py": 8192}  # bytes per input
SOAK_LIMIT_S = 300


def run_harness(name: str, runs: int, workdir: pathlib.Path, timeout_s: float) -> None:
    command = [sys.executable, str(FUZZ_DIR / name), f"-runs={runs}", f"-max_len={MAX_LEN[name]}", "-seed=1",
               f"-artifact_prefix={workdir}/", "-print_final_stats=1"]
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=timeout_s, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(command)} exited {result.returncode}:\n{output[-4000:]}"
    assert f"Done {runs} runs" in output, output[-2000:]


@pytest.mark.parametrize("name", sorted(MAX_LEN))
def test_harness_runs_clean(name: str, tmp_path: pathlib.Path) -> None:
    run_harness(name, 20_000, tmp_path, timeout_s=120)


@pytest.mark.soak
@pytest.mark.timeout(SOAK_LIMIT_S + 60)
@pytest.mark.parametrize("name", sorted(MAX_LEN))
def test_harness_runs_clean_soak(name: str, tmp_path: pathlib.Path) -> None:
    run_harness(name, 1_000_000, tmp_path, timeout_s=SOAK_LIMIT_S)
