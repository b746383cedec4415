"""scripts/live.py --file against a loopback server: the right text, and Ctrl-C that still gets the finals."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import soundfile

from ..conftest import REPO
from ..fakes import word_audio, words_of

WORDS = [3, 1, 4, 1, 5, 9, 2, 6]


def live(address: str, path: str, *flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(REPO / "scripts" / "live.py"), "--file", path, "--endpoints", address,
                             *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def spoken_words(output: str) -> list[int]:
    return words_of(" ".join(line for line in output.splitlines() if line.lower().startswith("w")))


def test_a_recording_played_as_the_microphone_prints_its_words(fake_server, tmp_path):
    path = tmp_path / "words.flac"
    soundfile.write(path, np.frombuffer(word_audio(WORDS), "<i2"), 16_000)
    process = live(fake_server.address, str(path), "--speed", "10")
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert spoken_words(out) == WORDS
    assert "done" in out


def test_ctrl_c_ends_the_audio_and_still_prints_the_last_finals(fake_server, tmp_path):
    path = tmp_path / "long.wav"
    soundfile.write(path, np.frombuffer(word_audio(WORDS * 8, pauses={7: 1.0}), "<i2"), 16_000)
    process = live(fake_server.address, str(path), "--speed", "2")
    time.sleep(3.0)  # about 6 s of audio: the first eight words and their pause
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    heard = spoken_words(out)
    assert len(heard) >= 8 and heard == (WORDS * 8)[:len(heard)], out
    assert len(heard) < len(WORDS) * 8, "the audio did not stop at Ctrl-C"
