"""Seam audit: which words a stream loses, adds or changes against offline decoding, and what did it.

Run it from the repository root, after `scripts/setup.sh server,test,bench`:

    python bench/seam_audit.py --ids jfk_inaugural_1961 --speeds 0,1,2,4,8 --runs 50 --quiet
    python bench/seam_audit.py --speeds 1,4          # the long recordings, every seam printed

Each recording is decoded offline by faster-whisper (same model, beam 5, language en), then streamed through
a server in this process at each pace (`0`: as fast as the SDK sends), one stream at a time, with the
policy's DEBUG log captured. The stream's finals are aligned word by word with the offline transcript;
each deletion, insertion and substitution is printed with the windows, commits, cuts and filters whose
audio touched it. Printed per pace: WER and deletions against the human reference (stream and offline),
the words offline hears that the finals lack, the worst run, and how the finals' sentence marks and capitals
differ from offline's (bench/sentence_marks.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import jiwer
import numpy as np
from soxr import resample

import stream_bench as sb
from sentence_marks import boundary_disagreement_pairs, mark_then_lower_pairs, sentence_figures
from transcriber_sdk import Client, Word, chunked, read_pcm16
from transcriber_server.app import TranscriberApp
from transcriber_server.batch_decode import joined_pieces
from transcriber_server.engine import WhisperEngine, resolve_device
from transcriber_server.models import EMBEDDED_MODEL, model_path
from transcriber_server.policy import SAMPLE_RATE
from transcriber_server.policy import Word as ServerWord
from transcriber_server.policy import normalize
from transcriber_server.settings import ServerSettings

CONTEXT_S = 0.5  # policy records and words this close to an edit are printed with it
FAR = "\x00"  # stands in for a word far from the edit until the run of them is shortened
LISTED_WORD = re.compile(r"\S+\[(?P<start>[\d.]+)-(?P<end>[\d.]+) p[\d.]+\]")  # as the policy logs a word


@dataclass(frozen=True)
class Edit:
    """One place where the stream's finals differ from the offline words."""

    kind: str  # delete (offline heard it, the finals lack it), insert, substitute
    offline: tuple[Word, ...]
    stream: tuple[Word, ...]

    @property
    def span_s(self) -> tuple[float, float]:
        words = self.offline or self.stream
        return words[0].start_s, words[-1].end_s

    def __str__(self) -> str:
        said = " ".join(word.text.strip() for word in self.offline)
        heard = " ".join(word.text.strip() for word in self.stream)
        start_s, end_s = self.span_s
        return f"{start_s:7.2f}-{end_s:7.2f}  {self.kind:<10} offline: {said or '-'!r}  stream: {heard or '-'!r}"


@dataclass(frozen=True)
class Record:
    span_s: tuple[float, float]
    message: str


class PolicyLog(logging.Handler):
    """Keeps the policy's DEBUG records of the stream in flight (streams run one at a time)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[Record] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(Record(getattr(record, "span_s", (0.0, 0.0)), record.getMessage()))


def transcribe_offline(items: list[dict], args: argparse.Namespace) -> dict[str, sb.Offline]:
    """faster-whisper on each whole recording, its words joined as the server joins them (the pieces of
    "14.55." or "i.e." are one word), so that a word counts the same on both sides."""
    from faster_whisper import WhisperModel

    device, compute_type = resolve_device(args.device, "auto")
    model = WhisperModel(model_path(args.model), device=device,
                         compute_type=compute_type, cpu_threads=args.cpu_threads)
    results = {}
    for item in items:
        samples = as_received(read_pcm16(str(args.speech_dir / item["file"])), args.rate)
        segments = list(model.transcribe(samples, beam_size=ServerSettings().beam_size, word_timestamps=True,
                                         vad_filter=True, language="en")[0])
        words = joined_pieces([ServerWord(word.word, word.start, word.end, word.probability)
                               for segment in segments for word in segment.words or []])
        results[item["id"]] = sb.Offline(
            text="".join(segment.text for segment in segments).strip(),
            words=tuple(Word(word.text, word.start_s, word.end_s, word.probability) for word in words))
    return results


def as_sent(recording: tuple[bytes, int], rate: int) -> tuple[bytes, int]:
    """The recording as a client at `rate` Hz sends it (0: as recorded)."""
    pcm, recorded_rate = recording
    if not rate or rate == recorded_rate:
        return pcm, recorded_rate
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768
    return (np.clip(resample(samples, recorded_rate, rate), -1, 1) * 32767).astype("<i2").tobytes(), rate


def as_received(recording: tuple[bytes, int], rate: int) -> np.ndarray:
    """The 16 kHz samples the server decodes when the recording is sent at `rate` Hz."""
    pcm, sent_rate = as_sent(recording, rate)
    return resample(np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768, sent_rate, SAMPLE_RATE)


def keyed(words: Sequence[Word]) -> tuple[list[Word], list[str]]:
    """One key per written word (case and punctuation do not count; "42-line" is two, as the WER normaliser
    counts it), each with the word it comes from."""
    pairs = [(word, key) for word in words for key in map(normalize, word.text.replace("-", " ").split()) if key]
    return [word for word, _ in pairs], [key for _, key in pairs]


def _unique(words: Sequence[Word]) -> tuple[Word, ...]:
    return tuple(word for index, word in enumerate(words) if index == 0 or word is not words[index - 1])


def align(offline: Sequence[Word], stream: Sequence[Word]) -> list[Edit]:
    """The edits that turn the offline words into the stream's finals (Levenshtein alignment by jiwer)."""
    offline, offline_keys = keyed(offline)
    stream, stream_keys = keyed(stream)
    if not offline_keys or not stream_keys:
        return ([Edit("delete", _unique(offline), ())] if offline else []) + \
               ([Edit("insert", (), _unique(stream))] if stream else [])
    output = jiwer.process_words(" ".join(offline_keys), " ".join(stream_keys))
    edits = []
    for chunk in output.alignments[0]:
        if chunk.type == "equal":
            continue
        edits.append(Edit(chunk.type, _unique(offline[chunk.ref_start_idx:chunk.ref_end_idx]),
                          _unique(stream[chunk.hyp_start_idx:chunk.hyp_end_idx])))
    return edits


def matched(offline: Sequence[Word], stream: Sequence[Word]) -> list[tuple[Word, Word]]:
    """The offline and stream words that the alignment found the same, in order, each pair once."""
    offline, offline_keys = keyed(offline)
    stream, stream_keys = keyed(stream)
    if not offline_keys or not stream_keys:
        return []
    output = jiwer.process_words(" ".join(offline_keys), " ".join(stream_keys))
    pairs: list[tuple[Word, Word]] = []
    for chunk in output.alignments[0]:
        if chunk.type == "equal":
            for said, heard in zip(offline[chunk.ref_start_idx:chunk.ref_end_idx],
                                   stream[chunk.hyp_start_idx:chunk.hyp_end_idx]):
                if not pairs or pairs[-1][0] is not said or pairs[-1][1] is not heard:
                    pairs.append((said, heard))
    return pairs


def lost_words(edits: Sequence[Edit]) -> int:
    """Words offline hears that the finals lack or wrote differently."""
    return sum(len(edit.offline) for edit in edits if edit.kind != "insert")


def error_counts(references: list[str], hypotheses: list[str]) -> dict[str, float]:
    """WER and deletions in percent of the reference words, after Whisper's English normaliser."""
    output = jiwer.process_words([sb.NORMALIZER(text) for text in references],
                                 [sb.NORMALIZER(text) for text in hypotheses])
    words = output.hits + output.substitutions + output.deletions
    return {"wer": 100 * output.wer, "deletions": 100 * output.deletions / max(words, 1)}


class InProcessServer:
    """A TranscriberApp on a loopback port, run by its own event loop in a thread, so the policy logs here."""

    def __init__(self, settings: ServerSettings) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.engine = WhisperEngine(settings)
        self.app = asyncio.run_coroutine_threadsafe(self._start(settings, self.engine), self.loop).result(60)
        self.address = f"127.0.0.1:{self.app.port}"

    @staticmethod
    async def _start(settings: ServerSettings, engine: WhisperEngine) -> TranscriberApp:
        app = TranscriberApp(settings, engine)  # grpc.aio binds a server to the loop it is built in
        await app.start()
        return app

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.app.stop(0.5), self.loop).result(30)
        asyncio.run_coroutine_threadsafe(self.engine.scheduler.close(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


def stream_finals(client: Client, pcm: bytes, rate: int, speed: float) -> list[Word]:
    chunks = chunked(pcm, rate, realtime=True, speed=speed) if speed > 0 else chunked(pcm, rate)
    return [word for update in client.stream(chunks, sample_rate=rate, language="en") if update.is_final
            for word in update.words]


def describe(edit: Edit, records: list[Record]) -> list[str]:
    """The edit, then each policy record whose audio reaches it, with only the words near it."""
    start_s, end_s = edit.span_s

    def near(word: re.Match[str]) -> str:
        return word.group(0) if float(word["start"]) - CONTEXT_S <= end_s and float(word["end"]) + CONTEXT_S >= start_s \
            else FAR

    lines = [str(edit)]
    for record in records:
        if record.span_s[0] - CONTEXT_S <= end_s and record.span_s[1] + CONTEXT_S >= start_s:
            message = re.sub(f"(?: ?{FAR})+", " …", LISTED_WORD.sub(near, record.message))
            lines.append(f"{'':18}| {message}")
    return lines


def around(words: Sequence[Word], word: Word, reach: int = 3) -> str:
    """`word` with the words on either side, as text."""
    index = next(index for index, each in enumerate(words) if each is word)
    return " ".join(each.text.strip() for each in words[max(index - reach, 0): index + reach + 1])


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--speech-dir", type=Path,
                        default=Path(os.environ.get("TRANSCRIBER_SPEECH_DIR", sb.DEFAULT_SPEECH_DIR)))
    parser.add_argument("--ids", default="", help=f"comma-separated manifest ids; default: those >= {sb.LONG_S:.0f} s")
    parser.add_argument("--speeds", default="1,4", help="paces as multiples of real time; 0: as fast as the SDK sends")
    parser.add_argument("--runs", type=int, default=1, help="streams of each recording at each pace")
    parser.add_argument("--rate", type=int, default=0, help="send at this sample rate (8000: telephone); 0: as recorded")
    parser.add_argument("--model", default=EMBEDDED_MODEL)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--cpu-threads", type=int, default=2)
    parser.add_argument("--quiet", action="store_true", help="figures only: no seam listing")
    parser.add_argument("--set", action="append", default=[], metavar="SETTING=VALUE",
                        help="a server setting other than its default, e.g. --set one_decode_margin_s=inf")
    parser.add_argument("--json", type=Path, help="also write the figures and every edit to this file")
    return parser.parse_args(argv)


def settings_set(assignments: list[str]) -> dict:
    """--set name=value pairs as ServerSettings fields of their declared types."""
    kinds = {field.name: type(getattr(ServerSettings(), field.name)) for field in fields(ServerSettings)}
    chosen = {}
    for assignment in assignments:
        name, _, value = assignment.partition("=")
        if name not in kinds:
            raise SystemExit(f"--set {assignment}: no server setting {name!r}")
        chosen[name] = kinds[name](value) if kinds[name] is not bool else value.lower() in ("1", "true", "yes")
    return chosen


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    items = sb.load_items(args.speech_dir, args.ids)
    offline = transcribe_offline(items, args)
    audio = {item["id"]: as_sent(read_pcm16(str(args.speech_dir / item["file"])), args.rate) for item in items}
    policy_log = PolicyLog()
    logger = logging.getLogger("transcriber_server.policy")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(policy_log)
    settings = replace(ServerSettings(model=args.model, device=args.device, cpu_threads=args.cpu_threads),
                       host="127.0.0.1", port=0, metrics_port=-1, max_streams=1, **settings_set(args.set))
    server = InProcessServer(settings)
    report: dict[str, dict] = {}
    try:
        with Client([server.address]) as client:
            for speed in [float(speed) for speed in args.speeds.split(",")]:
                runs = []
                for item in items:
                    pcm, rate = audio[item["id"]]
                    for run in range(args.runs):
                        policy_log.records.clear()
                        finals = stream_finals(client, pcm, rate, speed)
                        said = offline[item["id"]].words
                        edits = align(said, finals)
                        pairs = matched(said, finals)
                        marks = sentence_figures(said, finals, pairs)
                        runs.append({"id": item["id"], "run": run, "lost": lost_words(edits),
                                     "text": " ".join(word.text.strip() for word in finals),
                                     "edits": [str(edit) for edit in edits], "sentences": asdict(marks)})
                        if not args.quiet and edits:
                            print(f"\n{item['id']} at {speed:g}x, run {run + 1}: {len(edits)} seams")
                            for edit in edits:
                                print("\n".join(describe(edit, policy_log.records)))
                        if not args.quiet and (marks.mark_then_lower_stream or not marks.starts_with_capital):
                            print(f"\n{item['id']} at {speed:g}x, run {run + 1}: sentence mark, then lower case: "
                                  f"{marks.mark_then_lower_stream} (offline: {marks.mark_then_lower_offline}); "
                                  f"starts with a capital: {marks.starts_with_capital}")
                            for pair in mark_then_lower_pairs(finals):
                                print("\n".join(describe(Edit("mark,lower", (), pair), policy_log.records)))
                        if not args.quiet and marks.boundary_disagreements:
                            print(f"\n{item['id']} at {speed:g}x, run {run + 1}: sentence ends that differ (offline | stream)")
                            for said_word, heard_word in boundary_disagreement_pairs(said, finals, pairs):
                                print(f"  {said_word.start_s:6.1f} s  {around(said, said_word)} | {around(finals, heard_word)}")
                report[f"{speed:g}x"] = summarize(items, offline, runs)
                print_summary(f"{speed:g}x", report[f"{speed:g}x"])
    finally:
        server.close()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def summarize(items: list[dict], offline: dict[str, sb.Offline], runs: list[dict]) -> dict:
    by_id = {item["id"]: item for item in items}
    references = [by_id[run["id"]]["text"] for run in runs]
    stream = error_counts(references, [run["text"] for run in runs])
    baseline = error_counts(references, [offline[run["id"]].text for run in runs])
    worst = max(runs, key=lambda run: run["lost"])
    marks = [run["sentences"] for run in runs]
    words = sum(figures["words"] for figures in marks)
    return {"runs": len(runs), "runs_losing_words": sum(1 for run in runs if run["lost"]),
            "lost_words": sum(run["lost"] for run in runs),
            "offline_words": sum(len(_unique(keyed(offline[run["id"]].words)[0])) for run in runs),
            "wer_stream": stream["wer"], "wer_offline": baseline["wer"],
            "deletions_stream": stream["deletions"], "deletions_offline": baseline["deletions"],
            "worst": {key: worst[key] for key in ("id", "run", "lost", "edits")},
            "mark_then_lower_stream": sum(len(figures["mark_then_lower_stream"]) for figures in marks),
            "mark_then_lower_offline": sum(len(figures["mark_then_lower_offline"]) for figures in marks),
            "boundary_disagreements_per_100": 100 * sum(figures["boundary_disagreements"] for figures in marks) / words,
            "case_disagreements_per_100": 100 * sum(figures["case_disagreements"] for figures in marks) / words,
            "runs_starting_lower": sum(1 for figures in marks if not figures["starts_with_capital"]),
            "per_run": runs}


def print_summary(pace: str, figures: dict) -> None:
    print(f"\n== {pace}: {figures['runs']} streams, {figures['runs_losing_words']} of them lost or changed words of offline "
          f"({figures['lost_words']} of {figures['offline_words']} words); "
          f"WER {figures['wer_stream']:.2f} % (offline {figures['wer_offline']:.2f} %), "
          f"deletions {figures['deletions_stream']:.2f} % (offline {figures['deletions_offline']:.2f} %)")
    print(f"   sentences: {figures['mark_then_lower_stream']} places where a sentence mark is followed by lower case "
          f"(offline {figures['mark_then_lower_offline']}); against offline, per 100 words: "
          f"{figures['boundary_disagreements_per_100']:.2f} sentence ends, {figures['case_disagreements_per_100']:.2f} "
          f"capitals; {figures['runs_starting_lower']} streams start in lower case")
    worst = figures["worst"]
    print(f"   worst stream: {worst['id']} run {worst['run'] + 1}, {worst['lost']} words: " + "; ".join(worst["edits"][:8]),
          flush=True)


if __name__ == "__main__":
    sys.exit(main())
