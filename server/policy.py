"""StreamPolicy: the audio window of one stream and the rule that settles words (LocalAgreement-2).

Pure state: no gRPC, no model. The session feeds audio, asks for the next
window to decode, and hands back the words the engine heard in it:

- a window is the audio since the last cut, re-decoded every `step_s` of new audio;
- words on which two consecutive hypotheses agree are committed (final), the rest is interim;
- once long, the window is cut in a pause inside committed speech, so it never grows past `max_window_s`;
- no decode happens while the voice-activity tracker hears no uncommitted speech;
- the end of speech (a pause), a FINALIZE request and the end of input settle everything as final, except
  at a short pause a sentence mark, and words that the decode at the pause read otherwise than the one
  before it: they wait for a decode that hears what follows them.
"""

from __future__ import annotations

import enum
import logging
import math
import re
from collections import deque
from difflib import SequenceMatcher
from dataclasses import dataclass, replace

import numpy as np

from .vad import FRAME_S, VoiceActivity, VoiceEvent, VoiceEventType

SAMPLE_RATE = 16_000
TRAILING_SILENCE_S = 0.3  # silence decoded after the last speech frame
LOOP_REPEATS_ONE_WORD, LOOP_REPEATS_PHRASE = 6, 4  # what counts as Whisper looping, not a speaker repeating
AGREEMENT_SLACK_S = 0.5  # two hypotheses agree on a word only where its two timings overlap, give or take this
UNPLACED_S = 0.01  # a word shorter than this was not found in the audio by the aligner
SURE_WORD_PROBABILITY = 0.5  # interim words at least this sure settle at a pause without a new decode
ONE_DECODE_PROBABILITY = 0.9  # a word this sure, heard well past its end, settles without a second decode
HEARD_PAST_SPEECH_S = 0.1  # ...if their decode heard this much past the last speech frame: the last word whole
FRAGMENT_S = 5.0  # a decode of less audio than this, with no text before it, may read it as a fragment
HELD_SILENCE_S = 1.0  # silence after which words held at a pause settle as the pause's decode read them
UNSURE_SILENCE_S = 2.5  # ...where their language is not sure yet: a lone short utterance settles as it was read
_NOT_A_WORD = re.compile(r"[^\w']+")
_ENDS_SENTENCE = re.compile(r"[.!?。！？…][\"'”’)\]}»]*\s*$")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Word:
    text: str  # as the model wrote it, usually with a leading space
    start_s: float  # offsets from the stream start
    end_s: float
    probability: float = 1.0

    def shifted(self, offset_s: float) -> Word:
        return replace(self, start_s=self.start_s + offset_s, end_s=self.end_s + offset_s)


@dataclass(frozen=True)
class PolicyOptions:
    """The policy's share of ServerSettings (which documents each one and holds the defaults)."""

    step_s: float
    max_window_s: float
    trim_window_s: float
    holdback_s: float
    keep_silence_s: float = 0.3  # silence kept before speech when silent audio is dropped
    one_decode_margin_s: float = math.inf  # a new sure word this far before the end of the audio needs no second decode
    prompt_chars: int = 200  # committed text passed back to the model as context
    # Each pause ends an utterance (speakers who switch languages): it settles all it can, holding no word over
    # to the next one, and the next window starts after it with no prompt, so the next utterance is decoded (and
    # its language detected) on its own.
    utterances_apart: bool = False


@dataclass(frozen=True)
class Window:
    audio: np.ndarray  # 16 kHz float32
    start_s: float
    end_s: float
    prompt: str
    final: bool  # everything heard in this window settles as final
    decode: bool = True  # False: settle the interim words of the last decode, without a new one
    through_s: float = 0.0  # the audio up to here counts as processed (silence after end_s included)
    at_pause: bool = False  # final because speech paused (not a FINALIZE request, the end of input or the cap)
    speech_s: float = 0.0  # speech in the audio (surely speech, by the bar speech must pass to begin)
    prefix: str = ""  # words the window is known to start with: the model takes them as said (unused: see docs)


class Settle(enum.Enum):
    """Why a window settles everything it heard."""

    PAUSE = "a pause in speech"
    REQUEST = "a FINALIZE request"
    END = "the end of input"


@dataclass(frozen=True)
class Update:
    final: tuple[Word, ...]
    interim: tuple[Word, ...]


class StreamPolicy:
    """The window and the commit rule of one stream."""

    def __init__(self, options: PolicyOptions, voice: VoiceActivity, prompted: bool = False) -> None:
        """`prompted`: text precedes the stream (the caller's prompt, or the final text before a resumed call)."""
        self._options = options
        self._voice = voice
        self._prompted = prompted
        self._chunks: list[np.ndarray] = []  # audio not yet merged into _audio
        self._audio = np.zeros(0, dtype=np.float32)  # from _start_s on
        self._start_s = 0.0
        self._received_samples = 0
        self._decoded_s = 0.0
        self._committed_s = 0.0
        self._recent: deque[Word] = deque(maxlen=160)  # committed words, for the prompt and de-duplication
        self._tentative: tuple[Word, ...] = ()
        self._tentative_heard_to_s = 0.0  # the end of the audio of the decode that wrote _tentative
        self._settle_points: deque[tuple[float, Settle]] = deque()  # pauses and FINALIZE requests, in stream time
        self._held_at_s: float | None = None  # the pause at which a decode's words were kept interim
        self._language_unsure = False  # the last decode's language may be wrong: a short pause settles nothing
        self._input_ended = False
        self._has_decoded = False
        self._settled_s = 0.0

    # -- input ---------------------------------------------------------------------------

    def add_audio(self, samples: np.ndarray) -> list[VoiceEvent]:
        """Appends 16 kHz samples; returns the speech events they complete."""
        if samples.size == 0:
            return []
        self._chunks.append(samples)
        self._received_samples += samples.size
        events = self._voice.feed(samples)
        self._settle_points.extend((event.offset_s, Settle.PAUSE) for event in events
                                   if event.type is VoiceEventType.END)
        return events

    def finalize(self) -> None:
        """Settles everything received so far at the next window (a FINALIZE request)."""
        self._settle_points.append((self.received_s, Settle.REQUEST))

    def end_input(self) -> None:
        """The client half-closed: everything left becomes final."""
        self._input_ended = True

    def end_at_pause(self) -> None:
        """The server is shutting down: ends the input at the last pause, so the settled point falls
        between words and the words after it reach the next endpoint whole, in the client's replay.
        Mid-speech with no pause since the last final word, it ends there."""
        end_s = self.received_s
        if self._voice.has_speech(end_s - FRAME_S, end_s):
            pause_s = self._voice.quiet_point(self._committed_s, end_s)
            end_s = pause_s if pause_s is not None else self._committed_s
        self._merge_chunks()
        self._audio = self._audio[: max(round((end_s - self._start_s) * SAMPLE_RATE), 0)]
        self._received_samples = round(self._start_s * SAMPLE_RATE) + self._audio.size
        self._settle_points = deque(point for point in self._settle_points if point[0] <= end_s)
        self._tentative = tuple(word for word in self._tentative if word.start_s < end_s)
        self._input_ended = True

    # -- state ---------------------------------------------------------------------------

    @property
    def received_s(self) -> float:
        return self._received_samples / SAMPLE_RATE

    @property
    def processed_s(self) -> float:
        """Audio transcribed or skipped as silence."""
        return self._decoded_s

    @property
    def settled_s(self) -> float:
        """Where a client may resume the stream on another call: every word before it is final, none spans
        it, and it lies in a pause where the window has one (a window that starts inside a word makes
        Whisper skip the next words). Never decreases."""
        # Any frame that may be speech counts: a quiet word ("ask" at 8 kHz) need not begin a speech region.
        if not self._tentative and (self._committed_s >= self._decoded_s or
                                    not self._voice.speech_in(self._committed_s, self._decoded_s)):
            point = max(self._committed_s, self._decoded_s)
        else:
            pause_s = self._voice.quiet_point(self._start_s, self._committed_s)
            point = pause_s if pause_s is not None else self._committed_s
        self._settled_s = max(self._settled_s, point)
        return self._settled_s

    @property
    def pending_s(self) -> float:
        """Audio received but not yet decoded."""
        return self.received_s - self._decoded_s

    @property
    def done(self) -> bool:
        return self._input_ended and self.pending_s <= 0 and not self._tentative

    # -- windows -------------------------------------------------------------------------

    def next_window(self) -> Window | None:
        """The next audio to decode, or None until enough new audio arrives.

        Silent audio with nothing unsettled before it is dropped here without a decode. At a
        pause that the last hypothesis already covered, the window comes with `decode=False`:
        its interim words settle as they are, since decoding audio that ends in silence is
        where Whisper hallucinates ("Thank you for watching").
        """
        while True:
            target_s, settle = self._target()
            if target_s is None:
                return None
            end_s = min(target_s, self._start_s + self._options.max_window_s)
            at_cap = end_s < target_s
            settling, at_pause = settle is not None, settle is Settle.PAUSE and not at_cap
            if not self._tentative and not self._voice.has_speech(self._committed_s, end_s):
                self._skip_silence(end_s)
                continue
            # Any frame that may be speech ends the wait: a quiet word after a pause need not begin speech.
            if self._held_at_s is not None and not self._voice.speech_in(self._held_at_s, end_s):
                # Only the word held at a pause is interim, and nothing was said since: no decode.
                wait_s = UNSURE_SILENCE_S if self._language_unsure else HELD_SILENCE_S
                if settling or end_s - self._voice.speech_end_before(end_s) >= wait_s:
                    return Window(audio=np.zeros(0, dtype=np.float32), start_s=self._start_s, end_s=end_s,
                                  prompt="", final=True, decode=False)
                self._decoded_s = max(self._decoded_s, end_s)
                continue
            if settling and not at_cap and self._tentative and not self._language_unsure and \
                    self._tentative_heard_to_s >= self._voice.speech_end_before(end_s) + HEARD_PAST_SPEECH_S and \
                    min(word.probability for word in self._tentative) >= SURE_WORD_PROBABILITY:
                return Window(audio=np.zeros(0, dtype=np.float32), start_s=self._start_s, end_s=end_s,
                              prompt="", final=True, decode=False, at_pause=at_pause)
            self._merge_chunks()
            # Trailing silence is processed but not decoded: Whisper fills it with invented words.
            audio_end_s = min(end_s, max(self._voice.speech_end_before(end_s) + TRAILING_SILENCE_S,
                                         self._committed_s, self._start_s + self._options.step_s))
            audio = self._audio[: round((audio_end_s - self._start_s) * SAMPLE_RATE)]
            # A window that hit the cap settles too: otherwise it could never move on.
            return Window(audio=audio, start_s=self._start_s, end_s=audio_end_s, prompt=self._prompt(),
                          final=settling or at_cap, through_s=end_s, at_pause=at_pause,
                          speech_s=self._voice.speech_s(self._start_s, audio_end_s))

    def _target(self) -> tuple[float | None, Settle | None]:
        """Where the next window should end, and why it settles everything (None: it does not)."""
        while self._settle_points and self._settle_points[0][0] <= self._decoded_s:
            point_s, why = self._settle_points.popleft()
            # A pause heard after its audio was decoded; not the one that held a word.
            if self._tentative and point_s > max(self._start_s, self._held_at_s or 0.0):
                return point_s, why
        if self._settle_points and self._settle_points[0][0] <= self.received_s:
            return self._settle_points[0]
        if self._input_ended:
            return (self.received_s, Settle.END) if self.pending_s > 0 or self._tentative else (None, None)
        if self.pending_s >= self._options.step_s:
            if not self._has_decoded and self.pending_s >= 2 * self._options.step_s:
                # A call that starts with a backlog (a client resuming a stream elsewhere): the first
                # hypothesis stops a step short, so the next decode, at once, can agree with it and
                # settle the backlog without waiting for new audio.
                return self.received_s - self._options.step_s, None
            return self.received_s, None
        return None, None

    def _skip_silence(self, end_s: float) -> None:
        self._decoded_s = max(self._decoded_s, end_s)
        if end_s - self._start_s > self._options.trim_window_s:
            self._cut(end_s - self._options.keep_silence_s)

    def _prompt(self) -> str:
        """Committed text before the window: the audio of later committed words is in the window itself. None
        with utterances apart: text in the last utterance's language drew the next one into it ("Если the
        reader will excuse me")."""
        if self._options.utterances_apart:
            return ""
        before = "".join(word.text for word in self._recent if _middle_s(word) < self._start_s)
        return before[-self._options.prompt_chars:].lstrip()

    # -- commit --------------------------------------------------------------------------

    def commit(self, window: Window, heard: list[Word], provisional: bool = False) -> Update:
        """Takes the words heard in `window` (offsets relative to its start) and settles what it can.

        For a window with `decode=False`, `heard` is ignored. `provisional`: the decode may have been in the
        wrong language (detection not sure yet): its words wait through a pause for speech that makes the
        language sure, up to UNSURE_SILENCE_S of silence, a FINALIZE request or the end of input. Returns the
        newly final words and the current interim tail.
        """
        span_s = (window.start_s, window.through_s if window.decode else window.end_s)
        held_at_s = self._held_at_s
        self._language_unsure = provisional
        if not window.decode:
            final = tuple(word for word in self._tentative if word.start_s < window.end_s)
            self._tentative = self._tentative[len(final):]
            self._decoded_s = max(self._decoded_s, window.end_s)
            log.debug("window %.2f-%.2f settles its interim words without a decode", *span_s, extra={"span_s": span_s})
        else:
            hypothesis = [word.shifted(window.start_s) for word in heard]
            if log.isEnabledFor(logging.DEBUG):
                log.debug("window %.2f-%.2f (audio to %.2f, %s) heard: %s", window.start_s, window.through_s,
                          window.end_s, "final" if window.final else "interim", _listed(hypothesis),
                          extra={"span_s": span_s})
            words = _logged("already committed", hypothesis, self._after_committed(hypothesis, window.start_s), span_s)
            words = _logged("over silence", words, self._voiced(words), span_s)
            words = _logged("repetition loop", words, drop_repetition_loop(words), span_s)
            words = _logged("unplaced tail", words, drop_unplaced_tail(words), span_s)
            words = self._capitalized_after_a_final_sentence_end(hypothesis, words)
            if window.final:
                words = _logged("unsure tail", words, drop_unsure_tail(words), span_s)
                if provisional and window.at_pause:
                    uncontested = 0  # in a language that may be wrong: the words wait for more speech
                    log.debug("window %.2f-%.2f: the language is not sure yet; the words wait for more speech",
                              *span_s, extra={"span_s": span_s})
                else:
                    contested = window.at_pause and not self._options.utterances_apart
                    uncontested = self._uncontested(words) if contested else len(words)
                final, self._tentative = tuple(words[:uncontested]), tuple(words[uncontested:])
            else:
                agreed = common_prefix_length(self._tentative, words)
                # Past the agreement, the words are new, or the last decode heard them too near its end to read
                # them surely: one decode may settle them. A word it had heard well and read otherwise may not.
                sure_before_s = self._tentative_heard_to_s - self._options.one_decode_margin_s
                if all(word.end_s > sure_before_s for word in self._tentative[agreed:]):
                    surely = heard_surely(words[agreed:], window.end_s - self._options.one_decode_margin_s)
                    if surely and log.isEnabledFor(logging.DEBUG):
                        log.debug("window %.2f-%.2f: one decode settles %s", *span_s,
                                  _listed(words[agreed:agreed + surely]), extra={"span_s": span_s})
                    agreed += surely
                # Words this close to the end of the audio have heard too little of what follows.
                while agreed and words[agreed - 1].end_s > window.end_s - self._options.holdback_s:
                    agreed -= 1
                if agreed and agreed == len(words) and _ENDS_SENTENCE.search(words[-1].text):
                    agreed -= 1  # a sentence mark on the last word heard marks where the audio ends (below)
                agreed = min(agreed, self._heard_whole_before(agreed))
                if agreed and provisional:
                    agreed = 0
                    log.debug("window %.2f-%.2f: the language is not sure yet; nothing settles before a pause",
                              *span_s, extra={"span_s": span_s})
                if agreed and self._reads_as_a_fragment(window, words[0]):
                    agreed = 0
                    log.debug("window %.2f-%.2f: the first words wait for a decode that reads them as a text",
                              *span_s, extra={"span_s": span_s})
                final = tuple(surer_case(self._tentative[index], word) if index < len(self._tentative) else word
                              for index, word in enumerate(words[:agreed]))
                self._tentative = tuple(words[agreed:])
                self._tentative_heard_to_s = window.end_s
            self._decoded_s = max(self._decoded_s, window.end_s, window.through_s)
            self._has_decoded = True
        self._held_at_s = None
        if window.final and window.decode and self._tentative:
            # Two decodes of the same speech read it differently ("my fellow Americans." at 8 kHz, then "am I
            # fellow America."): neither is agreement. The words wait for a decode that hears what follows,
            # as offline decoding would, or for a silence long enough to take the last reading.
            if not (provisional and window.at_pause):
                log.debug("window %.2f-%.2f: the previous decode read %s otherwise; held", *span_s,
                          _listed(self._tentative), extra={"span_s": span_s})
            self._held_at_s = max(window.end_s, window.through_s)
            self._tentative_heard_to_s = window.end_s
        elif window.at_pause and final and not self._options.utterances_apart and _ENDS_SENTENCE.search(final[-1].text):
            # The window ended in the pause, and Whisper ends a sentence where its audio ends: "themselves."
            # before "who are in the driver's seat". The word waits for a decode that writes a word after
            # it, as offline decoding would, or for a silence long enough to end a sentence. Two interim
            # decodes that heard nothing after such a word do not settle it either (above).
            final, self._tentative = final[:-1], final[-1:]
            self._held_at_s = max(window.end_s, window.through_s)
            self._tentative_heard_to_s = window.end_s
        if (final or self._tentative) and log.isEnabledFor(logging.DEBUG):
            log.debug("window %.2f-%.2f: final %s; interim %s", *span_s, _listed(final), _listed(self._tentative),
                      extra={"span_s": span_s})
        if final and not self._recent and not self._prompted:
            # A transcript starts with a capital, as offline decoding writes it. A window that began mid-word
            # ("right, let's" of "Alright, let's") or a fragment settled after FRAGMENT_S reads in lower case.
            final = (with_capital(final[0]), *final[1:])
        if final:
            final = in_order_after(self._recent[-1].end_s if self._recent else 0.0, final)
            self._recent.extend(final)
            self._committed_s = max(self._committed_s, final[-1].end_s)
        if window.final and self._held_at_s is None:
            # A held word settled without a decode covers its pause, not all the audio received since: that may
            # hold a word too quiet to begin speech, which the next decode must not take for committed audio.
            covered_s = held_at_s if held_at_s is not None and not window.decode else max(window.end_s, window.through_s)
            self._committed_s = max(self._committed_s, covered_s)
        if window.at_pause and self._options.utterances_apart and not self._tentative:
            self._cut(self._committed_s)
        self._trim(window)
        return Update(final=final, interim=self._tentative)

    def _capitalized_after_a_final_sentence_end(self, hypothesis: list[Word], words: list[Word]) -> list[Word]:
        """The new words, the first with a capital where the last final word ended a sentence and this decode
        read that word without the mark.

        A decode that hears both sides of a sentence end reads it either way ("surpassed. Printing" in one,
        "surpassed, printing" in the next); the finals took the mark from one and the case from the other,
        "surpassed. printing". A decode that wrote the mark and then lower case ("i.e. the") is kept.
        """
        if not words or not self._recent or not _ENDS_SENTENCE.search(self._recent[-1].text):
            return words
        position = next((index for index, word in enumerate(hypothesis) if word is words[0]), 0)
        read_before = hypothesis[position - 1] if position else None
        if read_before is None or normalize(read_before.text) != normalize(self._recent[-1].text) or \
                _ENDS_SENTENCE.search(read_before.text):
            return words
        return [with_capital(words[0]), *words[1:]]

    def _uncontested(self, words: list[Word]) -> int:
        """How many words of a decode at a pause come before the first one that the previous hypothesis,
        where its decode heard the word whole or surely, read otherwise. Words after the end of the previous
        hypothesis are no contest: nothing read them before."""
        agreed = common_prefix_length(self._tentative, words)
        return agreed if agreed < min(self._heard_whole_before(len(self._tentative)), len(words)) else len(words)

    def _heard_whole_before(self, count: int) -> int:
        """How many of the first `count` interim words the decode that wrote them heard whole, or surely.

        An unsure word at the very end of the audio is a guess at a cut-off sound, and the next decode,
        hearing one step more, often guesses the same: JFK's "ask", heard up to 0.02 s past its end, was
        "asked" (p 0.39), and again (p 0.41) with "not" cut off after it, where every longer window hears
        "ask". Such a hearing is no evidence for agreement; a later one that heard past the word is.
        """
        for index, word in enumerate(self._tentative[:count]):
            if word.probability < SURE_WORD_PROBABILITY and \
                    word.end_s > self._tentative_heard_to_s - self._options.holdback_s:
                return index
        return count

    def _reads_as_a_fragment(self, window: Window, first: Word) -> bool:
        """Whether a decode read the first words of the stream as a fragment, not as the start of a text.

        Whisper writes a second or two of speech in lower case without punctuation ("printing in the
        only sense"), and settled, that text became the prompt of every later window, which then wrote
        the whole stream so. Until a decode writes the first word with a capital, or has heard
        FRAGMENT_S of audio, the first words stay interim. Scripts without case never wait, nor does a
        stream that text precedes.
        """
        first_letter = next((char for char in first.text if char.isalpha()), "")
        return not (self._recent or self._prompted) and first_letter.islower() and \
            window.end_s - window.start_s < FRAGMENT_S

    def _voiced(self, words: list[Word]) -> list[Word]:
        """The words with speech under them: words over silence are hallucinations of a window that ends in a
        pause or mid-word.

        A word's audio may lie anywhere before the next word starts, and the aligner may give a word no
        time at all: after a long pause it squeezed a real "Now," (p 0.95) into 61.25-61.25, at the pause's
        end, where the voice-activity scores are still low. A sure word that the aligner could not place
        is judged by the audio up to the end of the word after it (an unsure one, such as "grass." at
        p 0.00 where a window began, is what this filter is for); an unplaced last word is
        drop_unplaced_tail's to judge.
        """
        voiced = []
        for index, word in enumerate(words):
            until_s = word.end_s
            if index + 1 < len(words):
                following = words[index + 1]
                sure_but_unplaced = _unplaced(word) and word.probability >= SURE_WORD_PROBABILITY
                until_s = following.end_s if sure_but_unplaced else max(word.end_s, following.start_s)
            if self._voice.speech_in(word.start_s - 0.1, until_s + 0.1):
                voiced.append(word)
        return voiced

    def _after_committed(self, words: list[Word], window_start_s: float) -> list[Word]:
        """The words of a hypothesis that come after the committed ones.

        The window still holds audio of committed words (as context), so a hypothesis repeats
        them first. Their text is aligned with the committed words; timestamps jitter too much
        between decodes to cut by time alone.
        """
        # A word is in the window when most of it is: a cut in a pause may fall before the end the aligner
        # gave the last word, and "again" before a cut at 27.73 s (aligned to 27.82 s) then matched the
        # "again" of "and again" after it, and both new words were dropped as already committed.
        committed = [normalize(word.text) for word in self._recent if _middle_s(word) >= window_start_s]
        if not committed:
            return words
        heard = [normalize(word.text) for word in words]
        blocks = [block for block in SequenceMatcher(None, committed, heard, autojunk=False).get_matching_blocks()
                  if block.size and words[block.b].start_s < self._committed_s + 1.0]
        if not blocks:
            return [word for word in words if word.start_s >= self._committed_s - 0.1]
        last = blocks[-1]
        seam = last.b + last.size
        # Committed words after the last match that the hypothesis heard differently ("my" as "am I",
        # "there for" as "therefore"): skip the words heard mostly inside committed audio, at most one
        # more than missed. By its middle, not its start: the next word's start can reach back into the
        # last committed word ("that" from 110.85 s after "for" ended at 111.05 s), and it was lost.
        limit = min(len(words), seam + len(committed) - last.a - last.size + 1) if last.a + last.size < len(committed) else seam
        while seam < limit and _middle_s(words[seam]) < self._committed_s:
            seam += 1
        return words[seam:]

    def _trim(self, window: Window) -> None:
        """Once the window is long, cuts it in a pause before the last committed word, so it stays short.

        Cutting inside a word makes the model mishear it, so the cut goes where the voice-activity
        scores show a pause; only when there is none for long does it fall back to a word end.
        """
        length_s = window.end_s - self._start_s
        if length_s <= self._options.trim_window_s:
            return
        pause_s = self._voice.quiet_point(self._start_s + 1.0, self._committed_s)
        if pause_s is not None:
            self._cut(pause_s)
        elif length_s > (self._options.trim_window_s + self._options.max_window_s) / 2 and self._committed_s > self._start_s:
            self._cut(self._committed_s)

    def _merge_chunks(self) -> None:
        if self._chunks:
            self._audio = np.concatenate([self._audio, *self._chunks])
            self._chunks.clear()

    def _cut(self, time_s: float) -> None:
        """Forgets the audio before time_s."""
        if time_s <= self._start_s:
            return
        self._merge_chunks()
        log.debug("window cut at %.2f (was from %.2f)", time_s, self._start_s, extra={"span_s": (time_s, time_s)})
        drop = min(round((time_s - self._start_s) * SAMPLE_RATE), self._audio.size)
        self._audio = self._audio[drop:].copy()
        self._start_s += drop / SAMPLE_RATE
        self._voice.forget_before(self._start_s)

    def __repr__(self) -> str:
        return (f"<StreamPolicy window {self._start_s:.2f}-{self.received_s:.2f}s, decoded to {self._decoded_s:.2f}s, "
                f"{len(self._tentative)} interim words>")


def _listed(words: tuple[Word, ...] | list[Word]) -> str:
    return " ".join(f"{word.text.strip()}[{word.start_s:.2f}-{word.end_s:.2f} p{word.probability:.2f}]"
                    for word in words) or "-"


def _logged(stage: str, before: list[Word], after: list[Word], span_s: tuple[float, float]) -> list[Word]:
    """Passes `after` through; at DEBUG, names the words a filter took out of `before` (the seam audit reads them)."""
    if len(after) < len(before) and log.isEnabledFor(logging.DEBUG):
        kept = {id(word) for word in after}
        log.debug("window %.2f-%.2f dropped as %s: %s", *span_s, stage,
                  _listed([word for word in before if id(word) not in kept]), extra={"span_s": span_s})
    return after


def with_capital(word: Word) -> Word:
    """The word with its first letter in upper case (unchanged in scripts without case)."""
    position = next((index for index, char in enumerate(word.text) if char.isalpha()), None)
    if position is None:
        return word
    return replace(word, text=word.text[:position] + word.text[position].upper() + word.text[position + 1:])


def surer_case(before: Word, now: Word) -> Word:
    """Of two agreeing readings that differ only in case, the more probable one's case, at the later timings.

    After "ages." two decodes read "The" (p 0.93) and "the" (p 0.04, a token the model all but ruled out):
    taking the later reading as it is wrote "ages. the"."""
    if before.text != now.text and before.text.lower() == now.text.lower() and before.probability > now.probability:
        return replace(now, text=before.text, probability=before.probability)
    return now


def normalize(text: str) -> str:
    """A word's identity for agreement: case and punctuation do not count."""
    return _NOT_A_WORD.sub("", text.lower())


def common_prefix_length(previous: tuple[Word, ...] | list[Word], current: list[Word]) -> int:
    """How many leading words two hypotheses share: the same word at about the same time.

    Times jitter between decodes, but not by seconds: a decode that skipped "aforementioned
    Gutenberg Bible, is" put the next "the" 2.4 s later than the decode before had it; agreeing on
    the text alone settled that "the" and moved the settled point past four words never heard again.
    """
    count = 0
    for old, new in zip(previous, current):
        if normalize(old.text) != normalize(new.text) or not (
                old.start_s <= new.end_s + AGREEMENT_SLACK_S and new.start_s <= old.end_s + AGREEMENT_SLACK_S):
            break
        count += 1
    return count


def drop_repetition_loop(words: list[Word], max_phrase: int = 6) -> list[Word]:
    """Cuts a hypothesis where Whisper starts looping on one phrase.

    A loop runs on until the token budget is spent; people do repeat themselves ("words words
    words words", "no no no"), so it takes six repeats of one word, or four of a longer phrase.
    """
    keys = [normalize(word.text) for word in words]
    for start in range(len(keys)):
        for size in range(1, max_phrase + 1):
            phrase = keys[start:start + size]
            if len(phrase) < size or not any(phrase):
                break
            repeats = 1
            while keys[start + repeats * size: start + (repeats + 1) * size] == phrase:
                repeats += 1
            if repeats >= (LOOP_REPEATS_ONE_WORD if size == 1 else LOOP_REPEATS_PHRASE):
                return words[:start]
    return words


def _middle_s(word: Word) -> float:
    return (word.start_s + word.end_s) / 2


def _unplaced(word: Word) -> bool:
    """The aligner gave the word no time: it could not find it in the audio."""
    return word.end_s - word.start_s < UNPLACED_S


def in_order_after(time_s: float, words: tuple[Word, ...]) -> tuple[Word, ...]:
    """The words, none starting before the word ahead of it ends (the first: before time_s).

    A word settled by a later decode is timed by that decode's aligner, which can place it a little
    earlier than the last settled word: "is" at 5.22 s was sent after "It" at 5.24 s.
    """
    placed = []
    for word in words:
        start_s = max(word.start_s, time_s)
        placed.append(replace(word, start_s=start_s, end_s=max(word.end_s, start_s)))
        time_s = placed[-1].end_s
    return tuple(placed)


def heard_surely(words: list[Word], before_s: float) -> int:
    """How many of `words`, which no earlier decode heard, one decode may settle: those that end before `before_s`
    (the decode heard well past them) with the model sure of them, up to the first that does not.

    LocalAgreement waits for a second decode of every word, and under load each step is long, so the final lag
    was about two steps and a decode. Measured on the long recordings of the speech set (tiny.en, windows
    growing by 0.5 s): of 439 words that ended 1-2 s before the audio with p >= 0.9, the next decode read
    every one the same; of words under p 0.5, 14-20 % were read otherwise.
    """
    count = 0
    for word in words:
        if word.end_s > before_s or word.probability < ONE_DECODE_PROBABILITY or _unplaced(word):
            break
        count += 1
    return count


def drop_unplaced_tail(words: list[Word]) -> list[Word]:
    """Drops the words at the end that the aligner could not place in the audio (zero length).

    Whisper invents text past the end of a window ("Thanks for watching"); the word aligner then
    squeezes it into no time at all at the very end.
    """
    end = len(words)
    while end and _unplaced(words[end - 1]):
        end -= 1
    return words[:end]


def drop_unsure_tail(words: list[Word], min_probability: float = 0.2, tail: int = 3) -> list[Word]:
    """Drops the end of a window that settles without a second hearing from its first unsure word on, unless a
    sure word follows it.

    At a pause the last real words are whole and usually sure; a fragment the model barely
    believes ("hopes." for a breath, "See you" after the last sentence) is not worth a final result.
    A sure word after an unsure one is speech going on: Spanish "siquiera próxima alción sacapuntas." ends in
    a word the reference has (p 0.65) after one at p 0.14.
    """
    for index in range(max(len(words) - tail, 0), len(words)):
        if words[index].probability < min_probability:
            if any(word.probability >= SURE_WORD_PROBABILITY for word in words[index + 1:]):
                return words
            return words[:index]
    return words
