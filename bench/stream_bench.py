"""Streaming benchmark: how well and how fast the server transcribes recordings streamed in real time.

Run it from the repository root, after `pip install -e '.[server,test]'`:

    python bench/stream_bench.py

Each recording (by default the long ones, >= 25 s, about 6 minutes in all) is transcribed offline with
faster-whisper first: the quality reference and the "audio clock" of when each word ends. Then it is
streamed through `transcriber-server` at real-time pace. Printed: per recording and pooled, WER (stream
and offline vs. the human reference, stream vs. offline), final and first-interim word lag (p50, p90),
end-of-stream latency, server CPU s per audio s; then server memory, server settings and the machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from difflib import SequenceMatcher
from pathlib import Path

import grpc
import jiwer
import numpy as np
import psutil
import soundfile
from grpc_health.v1 import health_pb2, health_pb2_grpc
from whisper_normalizer.english import EnglishTextNormalizer

from transcriber_sdk import Client, TranscriberError, Word, chunked, read_pcm16
from transcriber_server.engine import resolve_device
from transcriber_server.models import EMBEDDED_MODEL, model_path
from transcriber_server.settings import ServerSettings

DEFAULT_SPEECH_DIR = Path(__file__).resolve().parents[2] / "shared" / "speech"
LONG_S = 25.0  # the default set: recordings long enough for windows to be cut and lag to build up
HEALTH_TIMEOUT_S = 120.0  # loading a large model on a slow disk takes a while
SERVING = health_pb2.HealthCheckResponse.SERVING
AUDIBLE_SLACK_S = 0.5  # offline word starts jitter; an interim word may be matched this early
SHOWN_SETTINGS = ("model", "device", "compute_type", "cpu_threads", "beam_size", "step_s", "holdback_s",
                  "max_window_s", "trim_window_s", "endpoint_silence_s")
_NOT_A_WORD = re.compile(r"[^\w']+")
NORMALIZER = EnglishTextNormalizer()


@dataclass(frozen=True)
class Offline:
    text: str
    words: tuple[Word, ...]  # offsets in the recording: the audio clock


@dataclass(frozen=True)
class Arrival:
    at_s: float  # time.monotonic() when the client got this update
    is_final: bool
    text: str
    words: tuple[Word, ...]
    language: str = ""


@dataclass
class StreamRun:
    t0_s: float  # time.monotonic() just before the stream started
    last_audio_s: float = float("nan")  # when the last chunk was handed to gRPC
    arrivals: list[Arrival] = field(default_factory=list)


@dataclass(frozen=True)
class Measured:
    """What one recording gave; figures() turns one or several of these into a row."""

    id: str
    audio_s: float
    texts: dict[str, str]  # reference, offline, stream
    lags_s: dict[str, list[float]]  # final, interim
    end_latency_s: float
    cpu_used_s: float


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--speech-dir", type=Path,
                        default=Path(os.environ.get("TRANSCRIBER_SPEECH_DIR", DEFAULT_SPEECH_DIR)))
    parser.add_argument("--ids", default="", help=f"comma-separated manifest ids; default: those >= {LONG_S:.0f} s")
    parser.add_argument("--model", default=EMBEDDED_MODEL)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--cpu-threads", type=int, default=2)
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    return parser.parse_args(argv)


def load_items(speech_dir: Path, ids: str) -> list[dict]:
    with open(speech_dir / "manifest.jsonl", encoding="utf-8") as manifest:
        items = [json.loads(line) for line in manifest if line.strip()]
    if not ids:
        return [item for item in items if item["duration_s"] >= LONG_S]
    by_id = {item["id"]: item for item in items}
    wanted = [name.strip() for name in ids.split(",") if name.strip()]
    if unknown := [name for name in wanted if name not in by_id]:
        raise ValueError(f"not in {speech_dir / 'manifest.jsonl'}: {', '.join(unknown)}")
    return [by_id[name] for name in wanted]


def transcribe_offline(items: list[dict], args: argparse.Namespace) -> dict[str, Offline]:
    """Runs before the server starts, so the two never compete for the CPU."""
    from faster_whisper import WhisperModel

    device, compute_type = resolve_device(args.device, "auto")
    model = WhisperModel(model_path(args.model), device=device,
                         compute_type=compute_type, cpu_threads=args.cpu_threads)
    results = {}
    for item in items:
        audio, _ = soundfile.read(args.speech_dir / item["file"], dtype="float32")  # the set is 16 kHz mono
        segments, _ = model.transcribe(audio, beam_size=5, word_timestamps=True, vad_filter=True, language="en")
        segments = list(segments)
        results[item["id"]] = Offline(
            text="".join(segment.text for segment in segments).strip(),
            words=tuple(Word(word.word.strip(), word.start, word.end, word.probability)
                        for segment in segments for word in segment.words or []))
    del model
    gc.collect()  # CTranslate2 frees the weights only when the last reference goes
    return results


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_serving(server: subprocess.Popen, port: int) -> None:
    """Raises RuntimeError when the server exits or stays silent for HEALTH_TIMEOUT_S."""
    deadline_s = time.monotonic() + HEALTH_TIMEOUT_S
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline_s:
            if server.poll() is not None:
                raise RuntimeError(f"the server exited with code {server.returncode} before serving (log above)")
            try:
                if health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0).status == SERVING:
                    return
            except grpc.RpcError:
                pass  # not listening yet: the model is still loading
            time.sleep(0.2)
    raise RuntimeError(f"the server did not answer SERVING on port {port} within {HEALTH_TIMEOUT_S:.0f} s")


def cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system + times.children_user + times.children_system


def memory_mib(pid: int, key: str) -> float:
    """A line of /proc/<pid>/status (VmRSS, VmHWM) in MiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith(key + ":"))
    return kib / 1024


def stream_recording(client: Client, path: Path, language: str | None = "en", speed: float = 1.0) -> StreamRun:
    """Streams one recording at real-time pace (or `speed` times it), stamping every update as it arrives."""
    pcm, rate = read_pcm16(str(path))
    run = StreamRun(t0_s=time.monotonic())

    def noting_last_chunk() -> Iterator[bytes]:
        for chunk in chunked(pcm, rate, realtime=True, speed=speed):
            run.last_audio_s = time.monotonic()  # chunked() has already slept: this is the hand-over time
            yield chunk

    for update in client.stream(noting_last_chunk(), sample_rate=rate, language=language):
        run.arrivals.append(Arrival(time.monotonic(), update.is_final, update.text, update.words, update.language))
    return run


def word_keys(words: Iterable[Word]) -> list[str]:
    return [_NOT_A_WORD.sub("", word.text.lower()) for word in words]


def matched(heard: Sequence[str], spoken: Sequence[str]) -> Iterator[tuple[int, int]]:
    """(heard index, spoken index) of each word the two sequences share, in order."""
    for block in SequenceMatcher(None, heard, spoken, autojunk=False).get_matching_blocks():
        yield from ((block.a + offset, block.b + offset) for offset in range(block.size))


def final_lags(run: StreamRun, spoken: list[Word]) -> list[float]:
    """Seconds from the end of each matched word (audio clock) to the final that carried it."""
    finals = [(key, arrival.at_s) for arrival in run.arrivals if arrival.is_final
              for key in word_keys(arrival.words) if key]
    return [finals[heard][1] - (run.t0_s + spoken[said].end_s)
            for heard, said in matched([key for key, _ in finals], word_keys(spoken))]


def first_seen_lags(run: StreamRun, spoken: list[Word]) -> list[float]:
    """Seconds from the end of each word to the first update (interim or final) whose hypothesis had it."""
    spoken_keys = word_keys(spoken)
    final_keys: list[str] = []
    first_seen_s: dict[int, float] = {}
    for arrival in run.arrivals:
        keys = [key for key in word_keys(arrival.words) if key]
        final_keys += keys if arrival.is_final else []
        hypothesis = final_keys if arrival.is_final else final_keys + keys
        # Only words whose audio was sent can be heard: this keeps a stray "the" from matching one said later.
        sent_s = arrival.at_s - run.t0_s + AUDIBLE_SLACK_S
        audible = sum(1 for word in spoken if word.start_s <= sent_s)
        for _, said in matched(hypothesis, spoken_keys[:audible]):
            first_seen_s.setdefault(said, arrival.at_s)
    return [seen_s - (run.t0_s + spoken[said].end_s) for said, seen_s in first_seen_s.items()]


def wer_percent(references: list[str], hypotheses: list[str]) -> float:
    return 100 * jiwer.wer([NORMALIZER(text) for text in references], [NORMALIZER(text) for text in hypotheses])


def percentiles(lags_s: list[float]) -> list[float]:
    """Median and 90th percentile."""
    return [float(value) for value in np.percentile(lags_s, [50, 90])] if lags_s else [float("nan")] * 2


def measure(item: dict, offline: Offline, run: StreamRun, cpu_used_s: float) -> Measured:
    spoken = [word for word, key in zip(offline.words, word_keys(offline.words)) if key]
    finals = [arrival for arrival in run.arrivals if arrival.is_final]
    return Measured(
        id=item["id"], audio_s=item["duration_s"], cpu_used_s=cpu_used_s,
        texts={"reference": item["text"], "offline": offline.text, "stream": " ".join(final.text for final in finals)},
        lags_s={"final": final_lags(run, spoken), "interim": first_seen_lags(run, spoken)},
        end_latency_s=finals[-1].at_s - run.last_audio_s if finals else float("nan"))


def figures(name: str, measured: list[Measured]) -> dict:
    """One row: a recording's figures, or all recordings pooled (WER over all words, lags over all words)."""
    texts = {kind: [each.texts[kind] for each in measured] for kind in ("reference", "offline", "stream")}
    final_p50_s, final_p90_s = percentiles([lag for each in measured for lag in each.lags_s["final"]])
    interim_p50_s, interim_p90_s = percentiles([lag for each in measured for lag in each.lags_s["interim"]])
    audio_s = sum(each.audio_s for each in measured)
    return {"id": name, "audio_s": audio_s,
            "wer_stream_ref": wer_percent(texts["reference"], texts["stream"]),
            "wer_offline_ref": wer_percent(texts["reference"], texts["offline"]),
            "wer_stream_offline": wer_percent(texts["offline"], texts["stream"]),
            "final_lag_p50_s": final_p50_s, "final_lag_p90_s": final_p90_s,
            "interim_lag_p50_s": interim_p50_s, "interim_lag_p90_s": interim_p90_s,
            "end_latency_s": float(np.mean([each.end_latency_s for each in measured])),
            "cpu_s_per_audio_s": sum(each.cpu_used_s for each in measured) / audio_s,
            "words_matched": sum(len(each.lags_s["final"]) for each in measured)}


COLUMNS = (("audio_s", "audio", "s", 1), ("wer_stream_ref", "WER%", "str/ref", 1),
           ("wer_offline_ref", "WER%", "off/ref", 1), ("wer_stream_offline", "WER%", "str/off", 1),
           ("final_lag_p50_s", "final", "p50 s", 2), ("final_lag_p90_s", "final", "p90 s", 2),
           ("interim_lag_p50_s", "interim", "p50 s", 2), ("interim_lag_p90_s", "interim", "p90 s", 2),
           ("end_latency_s", "end", "lat s", 2), ("cpu_s_per_audio_s", "CPU s", "/audio s", 2))


def print_report(report: dict) -> None:
    summary, memory, settings = report["summary"], report["memory"], report["settings"]
    print(f"{'':<32}" + "".join(f"{top:>9}" for _, top, _, _ in COLUMNS))
    print(f"{'recording':<32}" + "".join(f"{bottom:>9}" for _, _, bottom, _ in COLUMNS))
    for row in [*report["recordings"], summary]:
        print(f"{row['id']:<32.32}" + "".join(f"{row[key]:>9.{digits}f}" for key, _, _, digits in COLUMNS))
    wer_gap = summary["wer_stream_ref"] - summary["wer_offline_ref"]
    print(f"targets: stream WER within 1 point of offline (now {wer_gap:+.1f}); final lag p50 <= 1.5 s, p90 <= 3 s; "
          "first interim p50 <= 0.7 s")
    print("'all': WER and lags pooled over every word, end latency the mean, CPU total over total audio")
    print(f"server memory: {memory['rss_loaded_mib']:.0f} MiB RSS after loading, "
          f"{memory['peak_mib']:.0f} MiB peak (VmHWM)")
    print("server settings: " + ", ".join(f"{key}={settings[key]}" for key in SHOWN_SETTINGS))
    print(f"machine: {report['machine']}")


def run_benchmark(args: argparse.Namespace) -> dict:
    items = load_items(args.speech_dir, args.ids)
    offline = transcribe_offline(items, args)
    port = args.port or free_port()
    flags = ["--port", str(port), "--model", args.model, "--device", args.device,
             "--cpu-threads", str(args.cpu_threads), "--log-level", "WARNING"]
    settings = asdict(ServerSettings.load(flags))  # what the server reads too: same flags, same environment
    settings["device"], settings["compute_type"] = resolve_device(args.device, settings["compute_type"])
    server = subprocess.Popen([sys.executable, "-m", "transcriber_server", *flags])
    try:
        wait_serving(server, port)
        process = psutil.Process(server.pid)
        memory = {"rss_loaded_mib": memory_mib(server.pid, "VmRSS")}
        measured = []
        with Client(endpoints=[f"127.0.0.1:{port}"]) as client:
            for item in items:
                cpu_before_s = cpu_s(process)
                run = stream_recording(client, args.speech_dir / item["file"])
                measured.append(measure(item, offline[item["id"]], run, cpu_s(process) - cpu_before_s))
        memory["peak_mib"] = memory_mib(server.pid, "VmHWM")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait()  # it drains within its grace_s, then exits
    machine = f"{platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    return {"recordings": [figures(each.id, [each]) for each in measured], "summary": figures("all", measured),
            "memory": memory, "settings": settings, "machine": machine}


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        report = run_benchmark(args)
    except (TranscriberError, RuntimeError, ValueError, OSError) as error:
        sys.exit(f"stream_bench: {error}")
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
