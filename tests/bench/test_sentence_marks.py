"""Sentence marks and capitals of a stream's finals against offline: the metric, and the real model streamed at
real time and at 4x writing no "sentence mark, then lower case" seam that offline decoding does not write."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from seam_audit import matched  # noqa: E402  (bench/ is a folder of scripts, not a package)
from sentence_marks import ends_sentence, mark_then_lower, sentence_ends, sentence_figures  # noqa: E402

from transcriber_sdk import Word  # noqa: E402


def written(text: str) -> list[Word]:
    return [Word(f" {token}", index * 0.5, index * 0.5 + 0.4, 0.9) for index, token in enumerate(text.split())]


def test_sentence_ends_are_marks_at_a_words_end_even_before_a_closing_quote():
    assert [ends_sentence(text) for text in (" plowed.", ' "no."', " why?", " 終わり。", " i.e.", " so,", " U.S", "")] == \
        [True, True, True, True, True, False, False, False]


def test_an_abbreviation_that_lower_case_follows_ends_no_sentence():
    offline = written("printed in France, etc., by the press i.e. the letter. The end")
    stream = written("printed in France, etc. by the press i.e. the letter. the end")
    assert mark_then_lower(offline) == [] and mark_then_lower(stream) == ["letter. the"]
    assert sentence_ends(stream) == [False] * 9 + [True, False, False]
    assert sentence_ends(written("as in France, etc. The end")) == [False, False, False, True, False, False]
    figures = sentence_figures(offline, stream, matched(offline, stream))
    assert figures.boundary_disagreements == 0 and figures.case_disagreements == 1  # "the" after "letter."


def test_the_figures_count_seams_and_disagreements_on_the_words_both_wrote():
    offline = written("It is the American people themselves who are in the driver's seat. It is")
    stream = written("it is the American people themselves. who are in the driver's seat It is")
    assert mark_then_lower(stream) == ["themselves. who"] and mark_then_lower(offline) == []
    figures = sentence_figures(offline, stream, matched(offline, stream))
    assert figures.words == 14 and not figures.starts_with_capital
    assert figures.boundary_disagreements == 2  # "themselves." and "seat"
    assert figures.case_disagreements == 1  # "it"
    assert figures.per_100_words(7) == pytest.approx(50)


def audit(speech: dict[str, dict], tmp_path: Path, item: str, speeds: str) -> dict:
    report_path = tmp_path / "audit.json"
    speech_dir = Path(speech[item]["path"]).parents[1]
    run = subprocess.run([sys.executable, "bench/seam_audit.py", "--ids", item, "--speeds", speeds, "--quiet",
                          "--speech-dir", str(speech_dir), "--json", str(report_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(report_path.read_text())


def assert_sentences_read_as_offline(report: dict) -> None:
    for pace, figures in report.items():
        assert figures["mark_then_lower_stream"] <= figures["mark_then_lower_offline"], \
            (pace, [run["sentences"]["mark_then_lower_stream"] for run in figures["per_run"]])
        assert figures["runs_starting_lower"] == 0, (pace, [run["text"][:60] for run in figures["per_run"]])


@pytest.mark.slow
def test_the_demo_recording_reads_as_offline_at_real_time_and_at_4x(speech, tmp_path):
    assert_sentences_read_as_offline(audit(speech, tmp_path, "ljspeech_LJ023-0051_0058_paragraph", "1,4"))


@pytest.mark.soak
def test_the_long_recording_reads_as_offline_at_real_time_and_at_4x(speech, tmp_path):
    assert_sentences_read_as_offline(audit(speech, tmp_path, "ljspeech_LJ001-0001_0032_long", "1,4"))
