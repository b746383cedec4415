"""LanguageChoice: which language a stream's windows are decoded in, and when a detected language is sure.

Whisper detects a language from the audio of a window. On a second of speech it is often wrong (Russian read
as Czech or French, German as English, with probabilities up to 0.8 on the multilingual dev set), and a
language taken from the first window then garbles the whole stream. So until a detection is sure the
language is provisional: every window detects again, and its words stay interim through pauses until speech
makes the language sure (or 2.5 s of silence, a FINALIZE or the end settles them as the last decode read them). A detection is sure once the window holds LOCK_SPEECH_S of speech and the language
has LOCK_PROBABILITY among the candidates, or once the window holds FORCE_SPEECH_S of speech (the likeliest
language then). In switching mode a pause ends the lock and the next utterance is detected afresh.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

LOCK_PROBABILITY = 0.9  # wrong detections on 1-3 s of speech peaked at 0.84; right ones mostly pass 0.9 by 2-3 s
LOCK_SPEECH_S = 1.5
FORCE_SPEECH_S = 6.0


@dataclass(frozen=True)
class LanguageRequest:
    """What a stream's config asks: one fixed language, or detection among candidates (empty: any)."""

    fixed: str | None = None
    candidates: tuple[str, ...] = ()
    per_utterance: bool = False  # re-detect after each pause (speakers who switch languages)

    @property
    def switching(self) -> bool:
        """Each utterance gets its own detection: asked for, and no language fixed."""
        return self.per_utterance and self.fixed is None


class LanguageChoice:
    """The language of one stream's next window."""

    def __init__(self, request: LanguageRequest) -> None:
        self._request = request
        self._locked: str | None = request.fixed

    @property
    def language(self) -> str | None:
        """The language to decode in; None: detect (among `candidates`)."""
        return self._locked

    @property
    def candidates(self) -> tuple[str, ...]:
        return self._request.candidates

    @property
    def provisional(self) -> bool:
        """Whether words decoded now may be in the wrong language: then only a pause settles them."""
        return self._locked is None

    def heard(self, language: str, probability: float, speech_s: float) -> None:
        """A decode detected `language` with `probability` (among the candidates) on `speech_s` of speech."""
        if self._locked is not None:
            return
        if (probability >= LOCK_PROBABILITY and speech_s >= LOCK_SPEECH_S) or speech_s >= FORCE_SPEECH_S:
            self._locked = language
            log.debug("language %s locked (p %.2f on %.1f s of speech)", language, probability, speech_s)

    def utterance_ended(self) -> None:
        """A pause settled the words before it: in switching mode, the next utterance is detected afresh."""
        if self._request.switching:
            self._locked = None
