"""The `transcriber` command line, run in process against loopback servers with the FakeEngine."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from transcriber_sdk import Segment, Transcript, Word, cli
from transcriber_sdk.formats import cues, timestamp, to_srt
from transcriber_server.engine import DecodeOptions, FileSegment
from transcriber_server.settings import ServerSettings

from ..conftest import REPO, ServerThread, free_port
from ..fakes import FakeEngine, word_audio, words_of

WORDS = [3, 1, 4, 1, 5]
LONG = [2, 7, 1, 8, 2, 8, 1, 8, 2, 8, 4, 5, 9, 0, 4, 5, 2, 3, 5, 3]  # 20 words, ~9 s: more than one cue
SRT_TIME = r"\d{2}:\d{2}:\d{2},\d{3}"
VTT_TIME = r"\d{2}:\d{2}:\d{2}\.\d{3}"


class CountingEngine(FakeEngine):
    """Counts the whole-file calls it serves (the unary Transcribe ends here)."""

    def __init__(self) -> None:
        super().__init__()
        self.files = 0

    async def transcribe_file(self, audio: np.ndarray, options: DecodeOptions) -> tuple[list[FileSegment], str]:
        self.files += 1
        return await super().transcribe_file(audio, options)


def write_audio(path: Path, words: list[int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, np.frombuffer(word_audio(words), "<i2"), 16000)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = cli.main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


# -- formats (pure) ------------------------------------------------------------------------------


def test_timestamps_in_both_subtitle_forms():
    assert timestamp(3661.5, ",") == "01:01:01,500"
    assert timestamp(0.0004, ".") == "00:00:00.000"
    assert timestamp(59.9996, ".") == "00:01:00.000"


def test_a_long_segment_is_cut_between_words_and_a_short_one_is_kept_whole():
    words = tuple(Word(f"w{index}", index * 0.5, index * 0.5 + 0.4, 0.9) for index in range(30))
    long = Segment(text=" ".join(word.text for word in words), start_s=0.0, end_s=14.9, words=words)
    short = Segment(text=" short one", start_s=15.0, end_s=16.0)
    split = cues(Transcript(text="", segments=(long, short), language="en", duration_s=16.0))
    assert split[-1].text == "short one" and len(split) >= 3
    assert " ".join(cue.text for cue in split[:-1]) == long.text
    assert all(cue.end_s - cue.start_s <= 7.0 and len(cue.text) <= 84 for cue in split)
    blocks = to_srt(Transcript(text="", segments=(long,), language="en", duration_s=15)).split("\n\n")
    assert blocks[0].splitlines()[:2] == ["1", "00:00:00,000 --> 00:00:06,900"]  # w13 ends at 6.9 s, w14 at 7.4 s


def test_cues_keep_the_spacing_of_the_text_they_cut():
    words = tuple(Word(character, index * 1.0, index * 1.0 + 0.9, 0.9) for index, character in enumerate("今天天气很好"))
    segment = Segment(text="今天天气很好", start_s=0.0, end_s=5.9, words=words)
    split = cues(Transcript(text="", segments=(segment,), language="zh", duration_s=6.0), max_s=3.0)
    assert [cue.text for cue in split] == ["今天天", "气很好"]


# -- transcribe ----------------------------------------------------------------------------------


def test_txt_is_the_default_format_and_the_current_folder_the_default_output(fake_server, tmp_path, capsys,
                                                                               monkeypatch):
    source = write_audio(tmp_path / "in" / "talk.wav", WORDS)
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "transcribe", source, "--endpoints", fake_server.address)
    assert code == 0
    assert words_of((tmp_path / "talk.txt").read_text()) == WORDS
    assert "1 done, 0 skipped, 0 failed" in out and "real time" in out


def test_json_has_text_segments_and_words(fake_server, tmp_path, capsys):
    source = write_audio(tmp_path / "talk.flac", WORDS)
    code, _, _ = run(capsys, "transcribe", source, "--endpoints", fake_server.address, "--format", "json",
                     "--output-dir", tmp_path / "out")
    assert code == 0
    document = json.loads((tmp_path / "out" / "talk.json").read_text())
    assert words_of(document["text"]) == WORDS
    assert document["model"] == "fake" and document["language"] == "en"
    assert document["duration_s"] == pytest.approx(len(word_audio(WORDS)) / 32000, abs=0.01)
    [segment] = document["segments"]
    assert [word["text"] for word in segment["words"]] == [f"w{number}" for number in WORDS]
    assert set(segment["words"][0]) == {"text", "start_s", "end_s", "probability"}
    assert 0 < segment["start_s"] < segment["end_s"]


@pytest.mark.parametrize("format_name, header, time_pattern", [("srt", r"1\n", SRT_TIME),
                                                                ("vtt", r"WEBVTT\n\n", VTT_TIME)])
def test_subtitles_are_well_formed_with_long_speech_cut_into_cues(fake_server, tmp_path, capsys, format_name,
                                                                  header, time_pattern):
    source = write_audio(tmp_path / "long.wav", LONG)
    code, _, _ = run(capsys, "transcribe", source, "--endpoints", fake_server.address, "--format", format_name,
                     "--output-dir", tmp_path)
    assert code == 0
    text = (tmp_path / f"long.{format_name}").read_text()
    assert re.match(header, text)
    times = re.findall(rf"^({time_pattern}) --> ({time_pattern})$", text, flags=re.MULTILINE)
    assert len(times) >= 2, text  # ~9 s of speech: more than one cue
    assert all(start < end for start, end in times) and times == sorted(times)
    spoken = [line for line in text.splitlines() if line.startswith("w") or " w" in line]
    assert words_of(" ".join(spoken)) == LONG


def test_existing_outputs_are_skipped_unless_overwrite(fake_server, tmp_path, capsys):
    first, second = write_audio(tmp_path / "a.wav", WORDS), write_audio(tmp_path / "b.wav", [9])
    (tmp_path / "a.txt").write_text("kept\n")
    code, out, err = run(capsys, "transcribe", first, second, "--endpoints", fake_server.address,
                         "--output-dir", tmp_path)
    assert code == 0 and "1 done, 1 skipped" in out and "skipping 1 file" in err
    assert (tmp_path / "a.txt").read_text() == "kept\n" and words_of((tmp_path / "b.txt").read_text()) == [9]
    code, out, _ = run(capsys, "transcribe", first, second, "--endpoints", fake_server.address,
                       "--output-dir", tmp_path, "--overwrite")
    assert code == 0 and "2 done, 0 skipped" in out
    assert words_of((tmp_path / "a.txt").read_text()) == WORDS
    assert not list(tmp_path.glob(".*.tmp")), "a temporary file was left behind"


def test_a_folder_is_searched_recursively_for_audio(fake_server, tmp_path, capsys):
    write_audio(tmp_path / "in" / "one.wav", [1])
    write_audio(tmp_path / "in" / "deep" / "er" / "two.FLAC", [2])
    (tmp_path / "in" / "notes.txt").write_text("not audio")
    code, out, _ = run(capsys, "transcribe", tmp_path / "in", "--endpoints", fake_server.address,
                       "--output-dir", tmp_path / "out")
    assert code == 0 and "2 done" in out
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["one.txt", "two.txt"]
    assert words_of((tmp_path / "out" / "two.txt").read_text()) == [2]


def test_a_corrupt_file_fails_alone_and_the_run_exits_1(fake_server, tmp_path, capsys):
    write_audio(tmp_path / "in" / "good1.wav", [1, 2])
    (tmp_path / "in" / "broken.wav").write_bytes(b"RIFF\x00\x00not really a wave file" * 10)
    write_audio(tmp_path / "in" / "good2.flac", [3])
    code, out, err = run(capsys, "transcribe", tmp_path / "in", "--endpoints", fake_server.address,
                         "--output-dir", tmp_path / "out")
    assert code == 1
    assert "2 done, 0 skipped, 1 failed" in out
    [failure] = [line for line in err.splitlines() if line.startswith("failed:")]
    assert "broken.wav" in failure and "INVALID_ARGUMENT" in failure
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["good1.txt", "good2.txt"]
    assert "Traceback" not in err


def test_inputs_with_the_same_stem_are_refused_before_any_work(fake_server, tmp_path, capsys):
    first, second = write_audio(tmp_path / "x" / "talk.wav", [1]), write_audio(tmp_path / "y" / "talk.flac", [2])
    code, _, err = run(capsys, "transcribe", first, second, "--endpoints", fake_server.address,
                       "--output-dir", tmp_path / "out")
    assert code == 2
    assert "same name" in err and "talk.txt" in err and str(first) in err and str(second) in err
    assert not (tmp_path / "out").exists()
    assert fake_server.app.servicer.admission.active == 0


def test_a_batch_is_spread_over_both_endpoints(tmp_path, capsys):
    engines = [CountingEngine(), CountingEngine()]
    servers = [ServerThread(ServerSettings(max_streams=4), engine) for engine in engines]
    try:
        for index in range(8):
            write_audio(tmp_path / "in" / f"file{index}.wav", [index, index + 1])
        code, out, _ = run(capsys, "transcribe", tmp_path / "in", "--output-dir", tmp_path / "out",
                           "--endpoints", ",".join(server.address for server in servers))
    finally:
        for server in servers:
            server.stop()
    assert code == 0 and "8 done" in out
    assert sum(engine.files for engine in engines) == 8
    assert all(engine.files > 0 for engine in engines), [engine.files for engine in engines]
    for index in range(8):
        assert words_of((tmp_path / "out" / f"file{index}.txt").read_text()) == [index, index + 1]


def test_the_module_runs_as_a_program(fake_server, tmp_path):
    source = write_audio(tmp_path / "talk.wav", WORDS)
    done = subprocess.run([sys.executable, "-m", "transcriber_sdk", "transcribe", str(source), "--endpoints",
                           fake_server.address, "--output-dir", str(tmp_path), "--format", "vtt"],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "talk.vtt").read_text().startswith("WEBVTT\n")


# -- stream, endpoints, errors -------------------------------------------------------------------


def test_stream_prints_one_line_per_final_result(fake_server, tmp_path, capsys):
    source = write_audio(tmp_path / "talk.wav", WORDS)
    code, out, _ = run(capsys, "stream", source, "--endpoints", fake_server.address, "--speed", "20")
    assert code == 0
    assert words_of(" ".join(out.splitlines())) == WORDS


def test_endpoints_lists_a_serving_endpoint_from_the_environment(fake_server, capsys, monkeypatch):
    monkeypatch.setenv("TRANSCRIBER_ENDPOINTS", fake_server.address)
    code, out, _ = run(capsys, "endpoints")
    assert code == 0
    [row] = [line for line in out.splitlines() if fake_server.address in line]
    assert "SERVING" in row and "fake" in row and "0/4" in row


def test_endpoints_exits_1_when_one_is_down(fake_server, capsys):
    down = f"127.0.0.1:{free_port()}"
    code, out, _ = run(capsys, "endpoints", "--endpoints", f"{fake_server.address},{down}")
    assert code == 1
    assert "SERVING" in out and "UNREACHABLE" in out
    assert any(line.startswith(f"{down}: ") for line in out.splitlines())  # the reason, on a line of its own


def test_an_sdk_error_is_one_line_and_exit_1(tmp_path, capsys):
    source = write_audio(tmp_path / "talk.wav", WORDS)
    code, _, err = run(capsys, "stream", source, "--endpoints", f"127.0.0.1:{free_port()}", "--speed", "20")
    assert code == 1
    assert err.startswith("error: ") and err.count("\n") == 1 and "no endpoint" in err


def test_a_missing_input_is_a_usage_error(tmp_path, capsys):
    code, _, err = run(capsys, "transcribe", tmp_path / "nothing.wav", "--endpoints", "127.0.0.1:1")
    assert code == 2 and err == f"error: no such file or directory: {tmp_path / 'nothing.wav'}\n"
