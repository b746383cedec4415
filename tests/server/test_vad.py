"""Voice activity with the Silero model faster-whisper ships: a stream's scores and speech regions must not
depend on how its audio was split into messages."""

from __future__ import annotations

import numpy as np
import pytest
from faster_whisper.vad import get_vad_model

from transcriber_sdk import read_pcm16
from transcriber_server.vad import FRAME_SAMPLES, SileroScorer, VoiceActivity, VoiceEventType

# Message sizes in samples: a frame, the SDK's 100 ms, its 1 s maximum, and odd sizes that split frames.
SPLITS = [512, 1600, 16_000, 7_777, 3_001]


@pytest.fixture(scope="module")
def silero():  # type: ignore[no-untyped-def]
    return get_vad_model()


@pytest.fixture(scope="module")
def jfk(speech: dict[str, dict]) -> np.ndarray:
    pcm, _ = read_pcm16(speech["jfk_inaugural_1961"]["path"])
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768


def fed(voice: VoiceActivity, audio: np.ndarray, piece: int) -> list[tuple[VoiceEventType, float]]:
    events = []
    for offset in range(0, audio.size, piece):
        events += [(event.type, round(event.offset_s, 3)) for event in voice.feed(audio[offset:offset + piece])]
    return events


@pytest.mark.parametrize("piece", SPLITS)
def test_scores_are_those_of_one_pass_however_the_audio_is_split(silero, jfk, piece):
    whole = jfk[: jfk.size - jfk.size % FRAME_SAMPLES]
    one_pass = np.asarray(silero(whole)).reshape(-1)
    scorer = SileroScorer(silero.session)
    pending, scores = np.zeros(0, dtype=np.float32), []
    for offset in range(0, whole.size, piece):
        data = np.concatenate([pending, whole[offset:offset + piece]])
        usable = data.size - data.size % FRAME_SAMPLES
        pending = data[usable:]
        if usable:
            scores.append(scorer(data[:usable]))
    np.testing.assert_allclose(np.concatenate(scores), one_pass, atol=1e-5)


def test_speech_events_and_regions_do_not_depend_on_the_message_size(silero, jfk):
    """The reproduction of a word lost in JFK: fed in 1 s messages through faster-whisper's stateless wrapper,
    "ask" (2.3-3.9 s) scored under the speech threshold in every frame and the policy dropped it as silence."""
    runs = []
    for piece in SPLITS:
        voice = VoiceActivity(SileroScorer(silero.session), threshold=0.5, min_silence_s=0.6)
        runs.append((fed(voice, jfk, piece), voice.speech_in(2.3, 3.9)))
    assert all(run == runs[0] for run in runs), runs
    events, ask_is_speech = runs[0]
    assert ask_is_speech
    assert [kind for kind, _ in events][:4] == [VoiceEventType.BEGIN, VoiceEventType.END] * 2, events


def test_a_word_sent_at_8_khz_still_has_speech_under_it(silero, jfk):
    """Sent as telephone audio, "ask" peaks at 0.48: under the bar to begin speech, over the bar to end it."""
    import soxr

    telephone = soxr.resample(soxr.resample(jfk, 16_000, 8_000), 8_000, 16_000).astype(np.float32)
    voice = VoiceActivity(SileroScorer(silero.session), threshold=0.5, min_silence_s=0.6)
    fed(voice, telephone, 1600)
    assert voice.speech_in(2.3, 3.9)
    assert not voice.speech_in(2.5, 3.2), "the pause before it is still silence"
