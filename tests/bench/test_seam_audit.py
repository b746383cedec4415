"""Every word, every time: JFK streamed through a real server at 1x, 2x, 4x, 8x and unpaced, several times each,
keeps every word that offline faster-whisper (same model, same beam) hears; and the seam audit's alignment."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from seam_audit import align, lost_words, settings_set  # noqa: E402  (bench/ is a folder of scripts, not a package)

from transcriber_sdk import Word  # noqa: E402

PACES = ["0", "8", "4", "2", "1"]  # multiples of real time; 0: as fast as the SDK sends


def spoken(*spec: tuple[str, float, float]) -> list[Word]:
    return [Word(f" {text}", start_s, end_s, 0.9) for text, start_s, end_s in spec]


def test_the_alignment_names_each_lost_added_and_changed_word_with_its_time():
    offline = spoken(("And", 0.0, 0.7), ("so,", 0.7, 1.0), ("ask", 3.3, 3.8), ("not", 3.9, 4.3), ("what", 4.6, 5.7),
                     ("your", 5.7, 6.0), ("country", 6.0, 6.4))
    stream = spoken(("and", 0.0, 0.7), ("so", 0.7, 1.0), ("not", 3.9, 4.3), ("when", 4.6, 5.7), ("your", 5.7, 6.0),
                    ("country.", 6.0, 6.4), ("uh", 6.5, 6.6))
    edits = align(offline, stream)
    assert [(edit.kind, [word.text.strip() for word in edit.offline], [word.text.strip() for word in edit.stream])
            for edit in edits] == [("delete", ["ask"], []), ("substitute", ["what"], ["when"]), ("insert", [], ["uh"])]
    assert edits[0].span_s == (3.3, 3.8) and edits[2].span_s == (6.5, 6.6)
    assert lost_words(edits) == 2
    assert align(offline, offline) == []


@pytest.mark.slow
def test_jfk_keeps_every_word_at_every_pace(tmp_path: Path, speech: dict[str, dict]) -> None:
    report_path = tmp_path / "audit.json"
    speech_dir = Path(speech["jfk_inaugural_1961"]["path"]).parents[1]
    run = subprocess.run(
        [sys.executable, "bench/seam_audit.py", "--ids", "jfk_inaugural_1961", "--speeds", ",".join(PACES),
         "--runs", "3", "--speech-dir", str(speech_dir), "--json", str(report_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert sorted(report) == sorted(f"{pace}x" for pace in PACES)
    for pace, figures in report.items():
        assert figures["runs"] == 3 and figures["offline_words"] == 3 * 22, pace
        assert figures["lost_words"] == 0, (pace, figures["worst"], run.stdout[-3000:])
        assert figures["wer_stream"] <= figures["wer_offline"], (pace, figures["worst"])


def test_set_takes_server_settings_by_name_and_type():
    assert settings_set(["one_decode_margin_s=inf", "beam_size=3", "trim_window_s=6"]) == \
        {"one_decode_margin_s": float("inf"), "beam_size": 3, "trim_window_s": 6.0}
    with pytest.raises(SystemExit, match="no server setting 'beam'"):
        settings_set(["beam=3"])
