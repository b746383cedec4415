"""The concurrency benchmark runs end to end (small: two short streams and a short long stream) and reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_the_benchmark_reports_every_figure_and_draws_its_plots(tmp_path: Path, speech: dict[str, dict]) -> None:
    out = tmp_path / "out"
    speech_dir = Path(speech["jfk_inaugural_1961"]["path"]).parents[1]
    run = subprocess.run(
        [sys.executable, "bench/concurrency_bench.py", "--systems", "transcriber", "--streams", "2",
         "--ids", "jfk_inaugural_1961", "--long-minutes", "0.4", "--long-streams", "2", "--cpu-threads", "1",
         "--speech-dir", str(speech_dir), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    (level,) = report["levels"]
    assert level["streams"] == 2 and not level["failed"]
    assert len(level["calls"]) == 2
    figures = level["figures"]
    for key in ("wer_stream_ref", "final_lag_p50_s", "final_lag_p90_s", "interim_lag_p50_s", "end_latency_s",
                "cpu_s_per_audio_s"):
        assert figures[key] == figures[key], key  # not NaN
    assert figures["wer_stream_ref"] <= figures["wer_offline_ref"] + 10
    assert 0 < figures["final_lag_p50_s"] < 10
    assert level["peak_mib"] > 50
    (long,) = report["long"]
    assert long["lag_over_time"] and long["figures"]["audio_s"] >= 24
    assert (out / "lag_vs_streams.png").stat().st_size > 10_000
    assert (out / "lag_over_time.png").stat().st_size > 10_000
    assert "held" in run.stdout
