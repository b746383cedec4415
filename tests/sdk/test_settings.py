"""ClientSettings: arguments over TRANSCRIBER_* variables over defaults; bad values named."""

from __future__ import annotations

import pytest

from transcriber_sdk import AsyncClient, ClientSettings


def test_environment_then_arguments():
    environ = {"TRANSCRIBER_ENDPOINTS": "a:1, b:2,", "TRANSCRIBER_TIMEOUT_S": "5", "TRANSCRIBER_TOKEN": "tok-9f3",
               "TRANSCRIBER_GOOGLE_ID_TOKEN": "false"}
    settings = ClientSettings.from_env(environ)
    assert settings.endpoints == ("a:1", "b:2") and settings.timeout_s == 5 and settings.token == "tok-9f3"
    assert settings.google_id_token is False
    assert ClientSettings.from_env(environ, endpoints=["c:3"], timeout_s=None).endpoints == ("c:3",)
    assert "tok-9f3" not in repr(settings), "the token must not show in logs"


def test_client_arguments_win(monkeypatch):
    monkeypatch.setenv("TRANSCRIBER_ENDPOINTS", "a:1,b:2")
    assert AsyncClient().endpoints == ["a:1", "b:2"]
    assert AsyncClient("c:3, d:4", replay_s=45).settings.replay_s == 45
    assert AsyncClient(["e:5"]).endpoints == ["e:5"]


@pytest.mark.parametrize("environ, message", [
    ({"TRANSCRIBER_TIMEOUT_S": "soon"}, "TRANSCRIBER_TIMEOUT_S='soon'"),
    ({"TRANSCRIBER_GOOGLE_ID_TOKEN": "maybe"}, "TRANSCRIBER_GOOGLE_ID_TOKEN"),
    ({"TRANSCRIBER_ENDPOINTS": "a:1,a:1"}, "repeat"),
    ({"TRANSCRIBER_REPLAY_S": "5"}, "at least 30"),
])
def test_bad_values_are_named(environ, message):
    with pytest.raises(ValueError, match=message):
        ClientSettings.from_env(environ)
