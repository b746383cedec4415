"""The concurrency benchmark: long-form streams as the speech set allows, the held rule (every stream, not the pool),
and a small run end to end (two short streams in both start patterns, a short long stream)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from concurrency_bench import Level, client_forms, held, long_forms  # noqa: E402  (bench/ holds scripts)


def item(name: str, duration_s: float) -> dict:
    return {"id": name, "duration_s": duration_s}


def test_long_forms_keep_a_long_recording_join_a_reader_and_join_the_rest():
    items = [item("lj_long", 231), item("dctts_LJ001-0001", 80), item("edacc_C02", 26), item("dctts_LJ001-0002", 75),
             item("fleurs_en_001", 100), item("osr_us_000", 40), item("vctk_p225_001", 20), item("mfa_falsetto", 5)]
    forms = long_forms(items, min_s=150)
    assert [[one["id"] for one in form] for form in forms] == [
        ["lj_long"], ["dctts_LJ001-0001", "dctts_LJ001-0002"],
        ["edacc_C02", "fleurs_en_001", "osr_us_000", "vctk_p225_001", "mfa_falsetto"]]
    assert all(sum(one["duration_s"] for one in form) >= 150 for form in forms)


def test_clients_beyond_the_forms_hear_a_form_in_another_order():
    forms = [[item("a", 200)], [item(f"b{index}", 20) for index in range(10)]]
    chosen = client_forms(forms, 4)
    assert [[one["id"] for one in form][:2] for form in chosen] == [["a"], ["b0", "b1"], ["a"], ["b7", "b8"]]


def level(streams: int, worst_p90_s: float, wer_gap: float, start: str = "together") -> Level:
    per_stream = [{"final_lag_p50_s": 1.0, "final_lag_p90_s": 1.5}] * (streams - 1) + \
        [{"final_lag_p50_s": 2.0, "final_lag_p90_s": worst_p90_s}]
    figures = {"final_lag_p90_s": 1.5, "wer_stream_ref": 10 + wer_gap, "wer_offline_ref": 10.0}
    return Level("transcriber", start, streams, figures, per_stream, [], [], 0.0, 0.0)


def test_held_needs_every_stream_under_the_bar_and_wer_near_offline():
    levels = [level(1, 1.4, 0.0), level(2, 2.9, 0.4), level(4, 3.2, 0.0), level(8, 2.0, 0.6),
              level(4, 2.5, 0.0, start="staggered")]
    assert held(levels, "transcriber", "together") == 2  # 4: one stream at 3.2 s; 8: WER 0.6 above offline
    assert held(levels, "transcriber", "staggered") == 4




@pytest.mark.slow
def test_the_benchmark_reports_every_figure_and_draws_its_plots(tmp_path: Path, speech: dict[str, dict]) -> None:
    out = tmp_path / "out"
    speech_dir = Path(speech["jfk_inaugural_1961"]["path"]).parents[1]
    run = subprocess.run(
        [sys.executable, "bench/concurrency_bench.py", "--systems", "transcriber", "--streams", "2",
         "--ids", "jfk_inaugural_1961", "--form-s", "5", "--long-minutes", "0.4", "--long-streams", "2",
         "--cpu-threads", "1",
         "--speech-dir", str(speech_dir), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    together, staggered = report["levels"]
    assert (together["start"], staggered["start"]) == ("together", "staggered")
    assert together["streams"] == 2 and not together["failed"]
    assert len(together["calls"]) == 2 and len(together["per_stream"]) == 2
    figures = together["figures"]
    for key in ("wer_stream_ref", "final_lag_p50_s", "final_lag_p90_s", "interim_lag_p50_s", "end_latency_s",
                "cpu_s_per_audio_s"):
        assert figures[key] == figures[key], key  # not NaN
    assert figures["wer_stream_ref"] <= figures["wer_offline_ref"] + 10
    assert 0 < figures["final_lag_p50_s"] < 10
    assert together["peak_mib"] > 50
    assert set(report["held"]["transcriber"]) == {"together", "staggered"}
    (long,) = report["long"]
    assert long["lag_over_time"] and long["figures"]["audio_s"] >= 24
    assert (out / "lag_vs_streams.png").stat().st_size > 10_000
    assert (out / "lag_over_time.png").stat().st_size > 10_000
    assert "held" in run.stdout
