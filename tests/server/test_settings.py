"""ServerSettings: flag > TRANSCRIBER_* variable > default, and clear errors."""

from __future__ import annotations

import pytest

from transcriber_server.settings import ServerSettings


def test_defaults():
    settings = ServerSettings.load([], environ={})
    assert settings.port == 8080 and settings.model == "tiny.en" and settings.device == "auto"
    assert settings.compute_type == "auto" and settings.grace_s == 8.0


def test_port_variable_then_env_then_flag():
    assert ServerSettings.load([], environ={"PORT": "9000"}).port == 9000
    assert ServerSettings.load([], environ={"PORT": "9000", "TRANSCRIBER_PORT": "9100"}).port == 9100
    assert ServerSettings.load(["--port", "9200"], environ={"TRANSCRIBER_PORT": "9100"}).port == 9200


def test_every_field_reads_its_variable():
    env = {"TRANSCRIBER_MAX_STREAMS": "3", "TRANSCRIBER_STEP_S": "0.75", "TRANSCRIBER_REFLECTION": "false",
           "TRANSCRIBER_MODEL": "/models/large-v3-turbo", "TRANSCRIBER_DEVICE": "cuda"}
    settings = ServerSettings.load([], environ=env)
    assert (settings.max_streams, settings.step_s, settings.reflection) == (3, 0.75, False)
    assert (settings.model, settings.device) == ("/models/large-v3-turbo", "cuda")


@pytest.mark.parametrize("argv, env, message", [
    ([], {"TRANSCRIBER_MAX_STREAMS": "many"}, "invalid int value"),
    (["--device", "tpu"], {}, "device must be one of auto, cpu, cuda"),
    (["--max-streams", "0"], {}, "max_streams must be at least 1"),
    (["--reflection", "maybe"], {}, "expected true or false"),
])
def test_bad_values_exit_with_a_message(argv, env, message, capsys):
    with pytest.raises(SystemExit):
        ServerSettings.load(argv, environ=env)
    assert message in capsys.readouterr().err
