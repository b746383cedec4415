"""BatchDecoder: several streams' windows through the model at once (one encode, generate and align call).

faster-whisper's `transcribe` decodes one clip and pads it to 30 s for the encoder. Here the
windows of a batch share one encoder call whose input is only as long as the longest window
plus a margin of silence (`encoder_pad_s`); each window keeps its own prompt, fallback and word
alignment. Pure compute on the calling thread: the scheduler decides what goes into a batch.
"""

from __future__ import annotations

import math
import zlib
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from .invented import without_invented
from .policy import Word

FRAMES_PER_S = 100  # mel frames
MAX_FRAMES = 3000  # Whisper's encoder sees at most 30 s
FALLBACK_TEMPERATURES = (0.2, 0.4)  # sampled again only for a window whose greedy or beam decode fails the checks
COMPRESSION_RATIO_LIMIT = 2.4  # above it the text loops
LOG_PROB_LIMIT = -1.0
NO_SPEECH_LIMIT = 0.6  # with a low log-probability too: silence, no words
BEST_OF = 5
PREPEND_PUNCTUATION = "\"'“¿([{-"
APPEND_PUNCTUATION = "\"'.。,，!！?？:：”)]}、"
UNSPACED_LANGUAGES = {"zh", "ja", "th", "lo", "my", "yue"}  # faster-whisper splits these into words by characters


@dataclass(frozen=True)
class WindowJob:
    audio: np.ndarray  # 16 kHz float32, at most 30 s
    language: str | None  # None: detect (multilingual models only)
    prompt: str = ""  # the caller's: kept whole
    hotwords: str = ""
    prefix: str = ""  # text the window is known to start with: forced, not generated
    context: str = ""  # settled text before the window: trimmed from its oldest end when a batch needs it
    candidates: tuple[str, ...] = ()  # detection chooses among these (empty: any language)
    task: str = "transcribe"  # or "translate": the words in English (multilingual models only)


@dataclass(frozen=True)
class Decoded:
    words: list[Word]  # offsets relative to the start of the window
    language: str
    language_probability: float = 1.0  # of a detected language, among the candidates; 1 when it was given


@dataclass
class _Item:
    job: WindowJob
    features: np.ndarray  # log-mel, 80 or 128 x frames
    frames: int  # mel frames of the audio itself
    language: str = "en"
    language_probability: float = 1.0
    tokens: tuple[int, ...] = ()
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    alignment: tuple[dict, ...] = ()
    prefix_tokens: int = 0  # the result starts with the forced prefix


@dataclass(frozen=True)
class _Prompt:
    """A window's decoder prompt in its parts: [<|startofprev|> fixed context] start."""

    fixed: list[int]  # hotwords and the caller's prompt
    context: list[int]
    start: list[int]  # <|startoftranscript|>..., <|notimestamps|>, the prefix

    @property
    def before(self) -> int:
        return len(self.fixed) + len(self.context)

    def tokens(self, sot_prev: int, before: int) -> list[int]:
        """With `before` tokens ahead of <|startoftranscript|> (the context cut from its oldest end)."""
        kept = self.fixed + self.context[len(self.context) - (before - len(self.fixed)):]
        return ([sot_prev] + kept if kept else []) + self.start


class BatchDecoder:
    def __init__(self, model, *, beam_size: int, encoder_pad_s: float | None,  # type: ignore[no-untyped-def]
                 encoder_min_s: float = 0.0) -> None:
        """`model` is a faster_whisper.WhisperModel. `encoder_pad_s` None: pad every window to 30 s, as
        faster-whisper does; a number: pad to the longest window of the batch plus that much silence."""
        from faster_whisper.tokenizer import Tokenizer

        self._model = model
        self._beam_size = beam_size
        self._encoder_pad_s = encoder_pad_s
        self._encoder_min_s = encoder_min_s
        self._multilingual = model.model.is_multilingual
        self._tokenizers = {("en", "transcribe"): Tokenizer(model.hf_tokenizer, False)} if not self._multilingual else {}
        self._tokenizer_class = Tokenizer

    def decode(self, jobs: list[WindowJob]) -> list[Decoded]:
        """The words of each window, in the order of `jobs`."""
        items = []
        for job in jobs:
            features = self._model.feature_extractor(job.audio)
            items.append(_Item(job, features, min(features.shape[-1] - 1, MAX_FRAMES)))
        encoded = self._encode(items)
        for item, (language, probability) in zip(items, self._languages(jobs, encoded)):
            item.language, item.language_probability = language, probability
        groups: dict[tuple[str, str], list[_Item]] = defaultdict(list)
        for item in items:
            groups[item.language, item.job.task].append(item)
        if len(groups) > 1:  # languages or tasks differ: each group is decoded on its own encoder output
            for group in groups.values():
                self._decode_group(group, self._encode(group))
        else:
            self._decode_group(items, encoded)
        return [Decoded(words=without_invented(_words(item)), language=item.language,
                        language_probability=item.language_probability)
                for item in items]

    def _encode(self, items: list[_Item]):  # type: ignore[no-untyped-def]
        import ctranslate2

        longest = max(item.frames for item in items)
        if self._encoder_pad_s is None:
            length = MAX_FRAMES
        else:  # whole seconds, so batches of similar windows share shapes
            length = min(MAX_FRAMES, max(math.ceil(longest / FRAMES_PER_S + self._encoder_pad_s) * FRAMES_PER_S,
                                         round(self._encoder_min_s * FRAMES_PER_S)))
        batch = np.zeros((len(items), items[0].features.shape[0], length), dtype=np.float32)
        for row, item in enumerate(items):
            batch[row, :, :item.frames] = item.features[:, :item.frames]
        return self._model.model.encode(ctranslate2.StorageView.from_array(batch))

    def _languages(self, jobs: list[WindowJob], encoded) -> list[tuple[str, float]]:  # type: ignore[no-untyped-def]
        """Each window's language and its probability: given, or detected among the window's candidates."""
        if not self._multilingual:
            return [("en", 1.0)] * len(jobs)
        if all(job.language for job in jobs):
            return [(job.language, 1.0) for job in jobs]  # type: ignore[misc]
        detected = self._model.model.detect_language(encoded)
        return [(job.language, 1.0) if job.language else
                likeliest([(token[2:-2], probability) for token, probability in scores], job.candidates)
                for job, scores in zip(jobs, detected)]

    def _tokenizer(self, language: str, task: str):  # type: ignore[no-untyped-def]
        if (language, task) not in self._tokenizers:
            self._tokenizers[language, task] = self._tokenizer_class(self._model.hf_tokenizer, True, task=task,
                                                                     language=language)
        return self._tokenizers[language, task]

    def _decode_group(self, items: list[_Item], encoded) -> None:  # type: ignore[no-untyped-def]
        """Generates and aligns windows of one language; `encoded` has one row per item.

        CTranslate2 decodes a batch only when <|startoftranscript|> sits at the same place in every
        prompt, so windows are grouped: a group's settled context is cut to the shortest in it, its
        oldest tokens first; hotwords and the caller's prompt are never cut (a window whose own
        are longer than that waits for the next group), and windows without any context go alone."""
        tokenizer = self._tokenizer(items[0].language, items[0].job.task)
        prompts = [self._prompt(tokenizer, item) for item in items]
        left = sorted(range(len(items)), key=lambda index: prompts[index].before)
        groups: list[tuple[list[int], int]] = []
        while left:
            before = prompts[left[0]].before
            members = [index for index in left if len(prompts[index].fixed) <= before
                       and (before > 0 or prompts[index].before == 0)]
            groups.append((members, before))
            left = [index for index in left if index not in members]
        for members, before in groups:
            self._generate_and_align([items[index] for index in members],
                                     encoded if len(groups) == 1 else self._rows(encoded, items, members),
                                     [prompts[index].tokens(tokenizer.sot_prev, before) for index in members], tokenizer)

    def _rows(self, encoded, items: list[_Item], indexes: list[int]):  # type: ignore[no-untyped-def]
        """Some rows of the encoder output: sliced on the CPU, encoded again on a GPU (no copy to the host)."""
        import ctranslate2

        if encoded.device == "cpu":
            return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.asarray(encoded)[indexes]))
        return self._encode([items[index] for index in indexes])

    def _generate_and_align(self, items: list[_Item], encoded, prompts: list[list[int]], tokenizer) -> None:  # type: ignore[no-untyped-def]
        self._generate(items, encoded, prompts, tokenizer, temperature=0.0)
        for temperature in FALLBACK_TEMPERATURES:
            failing = [index for index, item in enumerate(items) if _needs_fallback(item, tokenizer)]
            if not failing:
                break
            self._generate([items[index] for index in failing], self._rows(encoded, items, failing),
                           [prompts[index] for index in failing], tokenizer, temperature=temperature)
        text_tokens = [[token for token in item.tokens if token < tokenizer.eot] if _has_speech(item) else []
                       for item in items]
        if not any(text_tokens):
            return
        # Windows without words align a stand-in token, so the batch keeps the encoder output's rows.
        stand_in = tokenizer.encode(" .")
        alignments = self._model.find_alignment(tokenizer, [tokens or stand_in for tokens in text_tokens], encoded,
                                                [item.frames for item in items])
        for item, tokens, alignment in zip(items, text_tokens, alignments):
            item.alignment = tuple(alignment) if tokens else ()

    def _prompt(self, tokenizer, item: _Item) -> _Prompt:  # type: ignore[no-untyped-def]
        """Whisper's prompt as faster-whisper builds it, but hotwords also with a prefix, and in parts."""
        def encoded(text: str) -> list[int]:
            return tokenizer.encode(" " + text.strip()) if text.strip() else []

        room = self._model.max_length // 2 - 1  # faster-whisper's limit for the text before <|startoftranscript|>
        fixed = (encoded(item.job.hotwords) + encoded(item.job.prompt))[:room]
        context = encoded(item.job.context)[len(fixed) - room:] if len(fixed) < room else []
        prefix = encoded(item.job.prefix)[: self._model.max_length // 2 - 1]
        item.prefix_tokens = len(prefix)
        return _Prompt(fixed, context, [*tokenizer.sot_sequence, tokenizer.no_timestamps, *prefix])

    def _generate(self, items: list[_Item], encoded, prompts: list[list[int]], tokenizer,  # type: ignore[no-untyped-def]
                  *, temperature: float) -> None:
        """Decodes the windows of `items` (the rows of `encoded`); a retry replaces a result only if it is better."""
        from faster_whisper.transcribe import get_suppressed_tokens

        sampling = {"beam_size": 1, "num_hypotheses": BEST_OF, "sampling_topk": 0, "sampling_temperature": temperature} \
            if temperature > 0 else {"beam_size": self._beam_size}
        results = self._model.model.generate(
            encoded, prompts, max_length=self._model.max_length, return_scores=True, return_no_speech_prob=True,
            suppress_blank=True, suppress_tokens=list(get_suppressed_tokens(tokenizer, [-1])), **sampling)
        for item, result in zip(items, results):
            tokens = result.sequences_ids[0]
            avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)  # length_penalty 1, as faster-whisper
            if temperature == 0 or avg_logprob > item.avg_logprob:
                item.tokens, item.avg_logprob, item.no_speech_prob = tuple(tokens), avg_logprob, result.no_speech_prob


def _compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / max(len(zlib.compress(data)), 1)


def _has_speech(item: _Item) -> bool:
    return not (item.no_speech_prob > NO_SPEECH_LIMIT and item.avg_logprob < LOG_PROB_LIMIT)


def _needs_fallback(item: _Item, tokenizer) -> bool:  # type: ignore[no-untyped-def]
    """Whisper's checks: a loop, or little confidence. Both cover the forced prefix too: a loop that goes back
    over the prefix's words shows only there (checking the new tokens alone let one through: JFK streamed
    at 4x, WER 7.2 % against 2.1 %), and CTranslate2 returns one score per sequence."""
    if not _has_speech(item):
        return False
    text = tokenizer.decode(list(item.tokens)).strip()
    return _compression_ratio(text) > COMPRESSION_RATIO_LIMIT or item.avg_logprob < LOG_PROB_LIMIT


def likeliest(scores: list[tuple[str, float]], candidates: tuple[str, ...]) -> tuple[str, float]:
    """The likeliest language of a detection (("ru", 0.8), ...) among `candidates` (empty: all), with its
    probability among them."""
    ranked = [(code, probability) for code, probability in scores if not candidates or code in candidates]
    if not ranked:  # a candidate the model does not know was refused with the config; be safe anyway
        ranked = list(scores)
    total = sum(probability for _, probability in ranked)
    language, probability = max(ranked, key=lambda pair: pair[1])
    return language, probability / total if total > 0 else 0.0


def _words(item: _Item) -> list[Word]:
    """Words of an alignment, punctuation merged into them as faster-whisper does."""
    from faster_whisper.transcribe import merge_punctuations

    alignment = [dict(timing) for timing in item.alignment]
    if not alignment:
        return []
    merge_punctuations(alignment, PREPEND_PUNCTUATION, APPEND_PUNCTUATION)
    words = [Word(timing["word"], float(timing["start"]), float(timing["end"]), float(timing["probability"]))
             for timing in alignment if timing["word"]]
    return words if item.language in UNSPACED_LANGUAGES else joined_pieces(words)


def joined_pieces(words: list[Word]) -> list[Word]:
    """Joins the pieces that Whisper's word splitter cuts at punctuation inside a word ("14" ".55." of
    "14.55.", "U" ".S."): a piece without a leading space belongs to the word before it.

    Split, the first piece looks like a whole word: two decodes agreed on "14", it was settled, and the
    next decode's "1455" could no longer replace it. Whole, the word settles only when it is whole.
    """
    joined: list[Word] = []
    for word in words:
        if joined and not word.text[:1].isspace():
            last = joined[-1]
            joined[-1] = Word(last.text + word.text, last.start_s, max(last.end_s, word.end_s),
                              min(last.probability, word.probability))
        else:
            joined.append(word)
    return joined
