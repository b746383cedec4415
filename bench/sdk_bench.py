"""SDK benchmark: batch throughput through the SDK against faster-whisper called directly, and failover time.

Run it from the repository root, after `pip install -e '.[server,test]'`:

    python bench/sdk_bench.py

1. Batch: the files of the speech set (all of them, or the first --files in manifest order) are transcribed
   a) in this process with faster-whisper directly, one after another, with the options the server uses for
   files (the baseline); b) through `AsyncClient.transcribe_file` over 1 local server with --threads CPU
   threads, with 1 file in flight and then, like the batch CLI, 2 x endpoints; c) over 4 local servers with
   max(1, threads // 4) threads each, 8 in flight. Each pass starts after a warm-up file (on every server).
   Printed: audio seconds per wall second, CPU seconds per audio second (servers and this process), CPUs
   that other processes kept busy meanwhile (a shared machine makes figures noisy), WER against the
   references, and the SDK overhead at 1 server = 1 - SDK throughput / direct throughput.
2. Failover: 2 servers; the long recording of the set is streamed at 2x real time through
   `AsyncClient.stream`, once as it is and once with the server carrying it killed (SIGKILL) after 15 s of
   audio. Printed: wall time from the kill to the first update and to the first final from the other server,
   WER of each whole transcript, and the words at the seam (repeated or lost words).

Every figure, every text and every update also goes to bench/results/sdk_bench.json (--json to change).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from difflib import SequenceMatcher
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

import transcriber_sdk
from transcriber_sdk import AsyncClient, Word, chunked, read_pcm16
from transcriber_server.models import EMBEDDED_MODEL, model_path
from transcriber_server.settings import ServerSettings

# bench/ is sys.path[0] when this script runs: the servers are started and scored as stream_bench does it.
from stream_bench import DEFAULT_SPEECH_DIR, free_port, wait_serving, wer_percent, word_keys

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEVICE, COMPUTE_TYPE = "cpu", "int8"  # the baseline's, and so the servers' too
JOBS_PER_ENDPOINT = 2  # files in flight per endpoint, as the batch CLI does
SCALED_SERVERS = 4
FAILOVER_SERVERS = 2
FAILOVER_KIND = "long"  # the manifest's long-form item; the longest recording when there is none
KILL_AFTER_AUDIO_S = 15.0
STREAM_SPEED = 2.0  # times real time
SEAM_WORDS = 8  # words shown on each side of the seam
STOP_WAIT_S = 10.0  # a server that has not exited this long after SIGTERM gets SIGKILL
SAME_RESPONSE_S = 0.002  # updates this close together came in one response
_RESUMED_FROM = re.compile(r"from ([\d.]+) s of audio")

log = logging.getLogger("sdk_bench")


@dataclass
class BatchRun:
    """One configuration's pass over the files."""

    name: str
    servers: int  # 0: faster-whisper in this process
    threads_each: int
    in_flight: int
    wall_s: float = float("nan")
    audio_s: float = 0.0
    cpu_s: float = float("nan")  # servers and this process
    other_cpu_s: float = float("nan")  # every other process on the machine meanwhile: the noise
    texts: dict[str, str] = field(default_factory=dict)  # manifest id -> transcript
    latencies_s: dict[str, float] = field(default_factory=dict)  # manifest id -> submit to result
    errors: dict[str, str] = field(default_factory=dict)  # manifest id -> traceback

    @property
    def throughput(self) -> float:
        return self.audio_s / self.wall_s


@dataclass(frozen=True)
class Arrival:
    at_s: float  # time.monotonic() when the update reached this process
    endpoint: str
    is_final: bool
    text: str
    words: tuple[Word, ...]


@dataclass
class StreamRun:
    """One recording streamed through the SDK, and the kill, if there was one."""

    t0_s: float
    sent_s: float = 0.0  # audio handed to the SDK so far
    arrivals: list[Arrival] = field(default_factory=list)
    killed_endpoint: str = ""
    killed_at_s: float = float("nan")
    kill_audio_s: float = float("nan")  # audio handed to the SDK at the kill
    sdk_log: list[tuple[float, str, str]] = field(default_factory=list)  # (time.monotonic(), level, message)
    error: str = ""  # traceback, when the stream raised

    @property
    def finals(self) -> list[Arrival]:
        return [arrival for arrival in self.arrivals if arrival.is_final]

    @property
    def text(self) -> str:
        return " ".join(final.text.strip() for final in self.finals if final.text.strip())


class LogTap(logging.Handler):
    """Keeps the SDK's log records with their time, to see when it noticed the failure."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[tuple[float, str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((time.monotonic(), record.levelname, record.getMessage()))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--speech-dir", type=Path,
                        default=Path(os.environ.get("TRANSCRIBER_SPEECH_DIR", DEFAULT_SPEECH_DIR)))
    parser.add_argument("--model", default=EMBEDDED_MODEL, help="default: the embedded tiny.en")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of the baseline and the 1-server run")
    parser.add_argument("--files", type=int, default=0, help="only the first N files of the manifest (0: all)")
    parser.add_argument("--skip-failover", action="store_true")
    parser.add_argument("--json", type=Path, default=RESULTS_DIR / "sdk_bench.json")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.files < 0:
        parser.error("need --threads >= 1 and --files >= 0")
    return args


def load_items(speech_dir: Path) -> list[dict]:
    with open(speech_dir / "manifest.jsonl", encoding="utf-8") as manifest:
        return [json.loads(line) for line in manifest if line.strip()]


def machine() -> str:
    import ctranslate2
    import faster_whisper

    cpu_model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            cpu_model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
                             cpu_model)
    except OSError:
        pass
    return (f"{platform.platform()}, {os.cpu_count()} CPUs ({cpu_model}), "
            f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}, "
            f"faster-whisper {faster_whisper.__version__}, ctranslate2 {ctranslate2.__version__}")


def server_flags(port: int, threads: int, model: str) -> list[str]:
    return ["--host", "127.0.0.1", "--port", str(port), "--model", model, "--device", DEVICE,
            "--compute-type", COMPUTE_TYPE, "--cpu-threads", str(threads), "--log-level", "WARNING"]


def busy_cpu_s() -> float:
    """CPU time the whole machine has spent busy since boot."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def cpu_s(processes: Sequence[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:  # killed: its time is gone with it
            continue
        total += times.user + times.system
    return total


# -- servers ---------------------------------------------------------------------------------


@contextmanager
def running_servers(count: int, threads: int, model: str) -> Iterator[dict[str, subprocess.Popen]]:
    """Starts `count` servers at once; yields {"127.0.0.1:PORT": process} when all serve. Always stops them."""
    servers: dict[str, subprocess.Popen] = {}
    try:
        ports: set[int] = set()
        while len(ports) < count:
            ports.add(free_port())
        for port in sorted(ports):
            servers[f"127.0.0.1:{port}"] = subprocess.Popen(
                [sys.executable, "-m", "transcriber_server", *server_flags(port, threads, model)])
        started_s = time.monotonic()
        for endpoint, server in servers.items():
            wait_serving(server, int(endpoint.rsplit(":", 1)[1]))
        log.info("%d server(s) x %d thread(s) serving after %.1f s", count, threads, time.monotonic() - started_s)
        yield servers
    finally:
        stop_servers(list(servers.values()))


def stop_servers(servers: Sequence[subprocess.Popen]) -> None:
    """SIGTERM, then SIGKILL what is still there after STOP_WAIT_S; never returns with one alive."""
    try:
        for server in servers:
            if server.poll() is None:
                server.terminate()
        deadline_s = time.monotonic() + STOP_WAIT_S
        for server in servers:
            try:
                server.wait(timeout=max(deadline_s - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pass
    finally:  # also when a second Ctrl-C lands while waiting
        for server in servers:
            if server.poll() is None:
                server.kill()
                server.wait()


# -- batch -----------------------------------------------------------------------------------


def transcribe_directly(model: WhisperModel, path: Path, language: str | None, beam_size: int) -> str:
    """As WhisperEngine._decode_file: faster-whisper's default temperatures (0.0 to 1.0 by 0.2) and
    condition_on_previous_text; no prompt or hotwords (the SDK sends none)."""
    from faster_whisper.audio import decode_audio  # what the server decodes uploaded files with

    segments, _ = model.transcribe(decode_audio(str(path), sampling_rate=16_000), language=language,
                                   beam_size=beam_size, word_timestamps=True, vad_filter=True)
    return " ".join(segment.text.strip() for segment in segments)


def run_direct(items: list[dict], warmup: dict, args: argparse.Namespace, beam_size: int) -> BatchRun:
    """faster-whisper in this process, one file after another, with the server's options for files.

    Runs before any server starts, so the two never compete for the CPU.
    """
    from faster_whisper import WhisperModel

    model = WhisperModel(model_path(args.model), device=DEVICE, compute_type=COMPUTE_TYPE, cpu_threads=args.threads)
    language = None if model.model.is_multilingual else "en"  # the server's check_language for an empty code
    run = BatchRun("direct faster-whisper", servers=0, threads_each=args.threads, in_flight=1)
    transcribe_directly(model, args.speech_dir / warmup["file"], language, beam_size)
    me = [psutil.Process()]
    cpu_before_s, busy_before_s, started_s = cpu_s(me), busy_cpu_s(), time.perf_counter()
    for item in items:
        file_started_s = time.perf_counter()
        run.texts[item["id"]] = transcribe_directly(model, args.speech_dir / item["file"], language, beam_size)
        run.latencies_s[item["id"]] = time.perf_counter() - file_started_s
    run.wall_s, run.cpu_s = time.perf_counter() - started_s, cpu_s(me) - cpu_before_s
    run.other_cpu_s = busy_cpu_s() - busy_before_s - run.cpu_s
    run.audio_s = sum(item["duration_s"] for item in items)
    del model
    gc.collect()  # CTranslate2 frees the weights only when the last reference goes
    return run


async def transcribe_batch(run: BatchRun, endpoints: list[str], items: list[dict], warmup: dict,
                           speech_dir: Path, processes: list[psutil.Process]) -> None:
    """Fills `run`: every file through one AsyncClient, at most `run.in_flight` at once."""
    # A client per server for the warm-up: one client could send two warm-ups to the same server.
    for endpoint in endpoints:
        async with AsyncClient([endpoint]) as warming:
            await warming.transcribe_file(speech_dir / warmup["file"])
    async with AsyncClient(endpoints) as client:
        await client.endpoint_status()  # opens every channel before the clock starts
        slots = asyncio.Semaphore(run.in_flight)

        async def one(item: dict) -> None:
            async with slots:
                file_started_s = time.perf_counter()
                try:
                    transcript = await client.transcribe_file(speech_dir / item["file"])
                except Exception:  # noqa: BLE001 - recorded and reported; the other files go on
                    run.errors[item["id"]] = traceback.format_exc()
                    return
                run.latencies_s[item["id"]] = time.perf_counter() - file_started_s
                run.texts[item["id"]] = transcript.text

        ours = [*processes, psutil.Process()]
        cpu_before_s, busy_before_s, started_s = cpu_s(ours), busy_cpu_s(), time.perf_counter()
        await asyncio.gather(*(one(item) for item in items))
        run.wall_s, run.cpu_s = time.perf_counter() - started_s, cpu_s(ours) - cpu_before_s
        run.other_cpu_s = busy_cpu_s() - busy_before_s - run.cpu_s
    run.audio_s = sum(item["duration_s"] for item in items if item["id"] in run.texts)


def run_sdk(servers: int, threads: int, in_flights: Sequence[int], items: list[dict], warmup: dict,
            args: argparse.Namespace) -> list[BatchRun]:
    """One pass over the files per entry of `in_flights`, on the same servers."""
    runs = [BatchRun(f"SDK, {servers} server{'s' if servers > 1 else ''}, {in_flight} in flight", servers=servers,
                     threads_each=threads, in_flight=in_flight) for in_flight in in_flights]
    with running_servers(servers, threads, args.model) as processes:
        for run in runs:
            asyncio.run(transcribe_batch(run, list(processes), items, warmup, args.speech_dir,
                                         [psutil.Process(process.pid) for process in processes.values()]))
    return runs


def batch_row(run: BatchRun, items: list[dict], direct: BatchRun | None) -> dict:
    done = [item for item in items if item["id"] in run.texts]
    same = sum(1 for item in done if direct is not None and run.texts[item["id"]] == direct.texts.get(item["id"]))
    return {"name": run.name, "servers": run.servers, "threads_each": run.threads_each,
            "threads_total": max(run.servers, 1) * run.threads_each, "in_flight": run.in_flight,
            "files": len(done), "failed": len(run.errors), "wall_s": run.wall_s, "audio_s": run.audio_s,
            "audio_s_per_wall_s": run.throughput, "cpu_s_per_audio_s": run.cpu_s / run.audio_s,
            "other_cpus_busy": run.other_cpu_s / run.wall_s,
            "latency_p50_s": statistics.median(run.latencies_s.values()) if run.latencies_s else float("nan"),
            "wer_ref": wer_percent([item["text"] for item in done], [run.texts[item["id"]] for item in done])
            if done else float("nan"),
            "same_text_as_direct": same if direct is not None and run is not direct else None}


# -- failover --------------------------------------------------------------------------------


async def stream_recording(pcm: bytes, rate: int, processes: Mapping[str, subprocess.Popen], kill: bool,
                           tap: LogTap, limit_s: float) -> StreamRun:
    """Streams the recording at STREAM_SPEED x real time; with `kill`, SIGKILLs the server that carries the
    stream once KILL_AFTER_AUDIO_S of audio was handed over."""
    run = StreamRun(t0_s=time.monotonic())
    first_log = len(tap.records)

    def paced() -> Iterator[bytes]:
        for chunk in chunked(pcm, rate, realtime=True, speed=STREAM_SPEED):
            run.sent_s += len(chunk) / (2 * rate)  # chunked() has slept already: this is the hand-over
            yield chunk

    async def kill_carrier() -> None:
        while run.sent_s < KILL_AFTER_AUDIO_S or not run.arrivals:
            await asyncio.sleep(0.005)
        run.killed_endpoint = run.arrivals[-1].endpoint
        os.kill(processes[run.killed_endpoint].pid, signal.SIGKILL)
        run.killed_at_s, run.kill_audio_s = time.monotonic(), run.sent_s

    async def consume() -> None:
        async with AsyncClient(list(processes)) as client:
            async for update in client.stream(paced(), rate, language="en"):
                run.arrivals.append(Arrival(time.monotonic(), update.endpoint, update.is_final, update.text,
                                            update.words))

    killer = asyncio.create_task(kill_carrier()) if kill else None
    try:
        await asyncio.wait_for(consume(), timeout=limit_s)
    except Exception:  # noqa: BLE001 - the SDK's failure is a result here: recorded and printed
        run.error = traceback.format_exc()
    finally:
        if killer is not None:
            killer.cancel()
            await asyncio.gather(killer, return_exceptions=True)
    run.sdk_log = tap.records[first_log:]
    return run


def seam(run: StreamRun) -> dict:
    """The final words on both sides of the first word the other server made final after the kill."""
    words = [(arrival.endpoint, word) for arrival in run.finals for word in arrival.words]
    index = next((position for position, (endpoint, _) in enumerate(words)
                  if endpoint != run.killed_endpoint), len(words))
    before = [word for _, word in words[max(index - SEAM_WORDS, 0): index]]
    after = [word for _, word in words[index: index + SEAM_WORDS]]
    before_keys, after_keys = word_keys(before), word_keys(after)
    repeated = [" ".join(after_keys[:size]) for size in range(1, 5)
                if len(before_keys) >= size and len(after_keys) >= size and before_keys[-size:] == after_keys[:size]]
    return {"index": index, "before": [asdict(word) for word in before], "after": [asdict(word) for word in after],
            "text": " ".join(key for key in before_keys) + " | " + " ".join(key for key in after_keys),
            "repeated_at_seam": repeated,
            "gap_s": after[0].start_s - before[-1].end_s if before and after else float("nan")}


def differences_near(run: StreamRun, reference: StreamRun, index: int) -> dict:
    """Words the killed run has extra or lacks, against the run without a kill, within SEAM_WORDS of the seam."""
    heard = word_keys(word for arrival in run.finals for word in arrival.words)
    expected = word_keys(word for arrival in reference.finals for word in arrival.words)
    extra, lost, everywhere = [], [], 0
    for tag, heard_from, heard_to, expected_from, expected_to in SequenceMatcher(
            None, heard, expected, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        everywhere += 1
        if heard_to < index - SEAM_WORDS or heard_from > index + SEAM_WORDS:
            continue
        extra += heard[heard_from:heard_to]
        lost += expected[expected_from:expected_to]
    return {"extra_near_seam": extra, "lost_near_seam": lost, "differing_spans_anywhere": everywhere}


def decode_step_s(run: StreamRun) -> float:
    """Median wall time between the server's responses: how often it finishes a decode."""
    # A response carrying a final and an interim arrives as two updates at once: count it once.
    gaps = [later.at_s - earlier.at_s for earlier, later in zip(run.arrivals, run.arrivals[1:])
            if later.at_s - earlier.at_s > SAME_RESPONSE_S]
    return statistics.median(gaps) if gaps else float("nan")


def failover_figures(item: dict, killed: StreamRun, plain: StreamRun) -> dict:
    others = [arrival for arrival in killed.arrivals
              if arrival.at_s >= killed.killed_at_s and arrival.endpoint != killed.killed_endpoint]
    first_any = others[0] if others else None
    first_words = next((arrival for arrival in others if arrival.words), None)
    first_final = next((arrival for arrival in others if arrival.is_final), None)
    left = next(((at_s, message) for at_s, _, message in killed.sdk_log
                 if at_s >= killed.killed_at_s and "left" in message), None)
    resumed = _RESUMED_FROM.search(left[1]) if left else None
    carrier_before = [arrival for arrival in killed.arrivals if arrival.at_s < killed.killed_at_s]
    seam_words = seam(killed)
    return {
        "recording": item["id"], "audio_s": item["duration_s"], "speed": STREAM_SPEED,
        "killed_endpoint": killed.killed_endpoint, "kill_audio_s": killed.kill_audio_s,
        "kill_wall_s": killed.killed_at_s - killed.t0_s,
        "last_final_end_before_kill_s": max((final.words[-1].end_s for final in carrier_before
                                             if final.is_final and final.words), default=float("nan")),
        "kill_to_sdk_left_s": left[0] - killed.killed_at_s if left else float("nan"),
        "sdk_left_message": left[1] if left else "",
        "resumed_from_s": float(resumed.group(1)) if resumed else float("nan"),
        "kill_to_first_update_s": first_any.at_s - killed.killed_at_s if first_any else float("nan"),
        "kill_to_first_words_s": first_words.at_s - killed.killed_at_s if first_words else float("nan"),
        "kill_to_first_final_s": first_final.at_s - killed.killed_at_s if first_final else float("nan"),
        "first_update_after_kill": first_any.text if first_any else "",
        "first_final_after_kill": first_final.text if first_final else "",
        "new_endpoint": first_any.endpoint if first_any else "",
        "decode_step_s": decode_step_s(plain),
        "wer_killed_ref": wer_percent([item["text"]], [killed.text]),
        "wer_plain_ref": wer_percent([item["text"]], [plain.text]),
        "wer_killed_plain": wer_percent([plain.text], [killed.text]),
        "seam": seam_words, **differences_near(killed, plain, seam_words["index"]),
        "errors": {name: run.error for name, run in (("killed", killed), ("plain", plain)) if run.error},
    }


def run_failover(items: list[dict], args: argparse.Namespace, tap: LogTap) -> tuple[dict, dict]:
    item = next((each for each in items if each.get("kind") == FAILOVER_KIND),
                max(items, key=lambda each: each["duration_s"]))
    pcm, rate = read_pcm16(str(args.speech_dir / item["file"]))
    limit_s = item["duration_s"] / STREAM_SPEED + 120
    with running_servers(FAILOVER_SERVERS, args.threads, args.model) as processes:
        async def both() -> tuple[StreamRun, StreamRun]:
            for endpoint in processes:  # warm both: either may carry the stream or take it over
                async with AsyncClient([endpoint]) as warming:
                    await warming.transcribe_file(args.speech_dir / items[0]["file"])
            log.info("streaming %s (%.1f s) at %.1fx, no kill", item["id"], item["duration_s"], STREAM_SPEED)
            plain = await stream_recording(pcm, rate, processes, False, tap, limit_s)
            log.info("streaming %s again, killing its server after %.0f s of audio", item["id"], KILL_AFTER_AUDIO_S)
            return await stream_recording(pcm, rate, processes, True, tap, limit_s), plain

        killed, plain = asyncio.run(both())
    raw = {name: {"t0_s": run.t0_s, "error": run.error, "sdk_log": run.sdk_log,
                  "killed_endpoint": run.killed_endpoint, "killed_at_s": run.killed_at_s - run.t0_s,
                  "text": run.text,
                  "arrivals": [{"at_s": arrival.at_s - run.t0_s, "endpoint": arrival.endpoint,
                                "is_final": arrival.is_final, "text": arrival.text,
                                "words": [asdict(word) for word in arrival.words] if arrival.is_final else []}
                               for arrival in run.arrivals]}
           for name, run in (("killed", killed), ("plain", plain))}
    return failover_figures(item, killed, plain), raw


# -- report ----------------------------------------------------------------------------------


def print_report(report: dict) -> None:
    print(f"machine: {report['machine']}")
    print(f"model: {report['model']} ({report['model_path']}), {DEVICE}/{COMPUTE_TYPE}, beam {report['beam_size']}, "
          f"VAD, word timestamps; transcriber_sdk {report['sdk_version']}")
    batch = report["batch"]
    print(f"\nbatch: {batch['files']} files, {batch['audio_s']:.1f} s of audio, manifest order, after a warm-up "
          f"file ({batch['warmup']}) on every server")
    print(f"{'configuration':<32}{'threads':>9}{'in':>5}{'wall':>8}{'audio s':>9}{'CPU s':>9}{'others':>8}"
          f"{'WER':>6}{'file':>7}{'same':>7}")
    print(f"{'':<32}{'':>9}{'flight':>5}{'s':>8}{'/wall s':>9}{'/audio s':>9}{'CPUs':>8}{'%':>6}{'p50 s':>7}"
          f"{'text':>7}")
    for row in batch["rows"]:
        threads = f"{max(row['servers'], 1)}x{row['threads_each']}={row['threads_total']}"
        same = "-" if row["same_text_as_direct"] is None else f"{row['same_text_as_direct']}/{row['files']}"
        failed = f"  {row['failed']} FAILED" if row["failed"] else ""
        print(f"{row['name']:<32}{threads:>9}{row['in_flight']:>5}{row['wall_s']:>8.1f}"
              f"{row['audio_s_per_wall_s']:>9.2f}{row['cpu_s_per_audio_s']:>9.3f}{row['other_cpus_busy']:>8.2f}"
              f"{row['wer_ref']:>6.1f}"
              f"{row['latency_p50_s']:>7.2f}{same:>7}{failed}")
    print("others CPUs: CPUs other processes kept busy meanwhile (noise; about +-0.15 is accounting skew); "
          "same text: files whose text equals the direct run's (a fallback to temperature > 0 samples at random)")
    for key, what in (("sdk_overhead_1_server", f"{JOBS_PER_ENDPOINT} in flight, as the CLI"),
                      ("sdk_overhead_1_server_1_in_flight", "1 in flight, as the baseline")):
        overhead = batch[key]
        print(f"SDK overhead at 1 server, {what}: 1 - SDK / direct throughput = {100 * overhead:.1f}% "
              f"(target <= 5%: {'met' if overhead <= 0.05 else 'MISSED'})")
    oversubscribed = " (oversubscribed)" if batch["threads_4"] > (os.cpu_count() or 1) else ""
    print(f"{SCALED_SERVERS} servers vs 1 server ({JOBS_PER_ENDPOINT} in flight): {batch['speedup_4_vs_1']:.2f}x "
          f"throughput with {batch['threads_4']} threads in all on {os.cpu_count()} CPUs{oversubscribed}")
    for row in batch["rows"]:
        if row["failed"]:
            first = next(iter(batch["errors"][row["name"]].items()))
            print(f"{row['name']}: {row['failed']} file(s) failed; first, {first[0]}:\n{first[1]}")
    if failover := report.get("failover"):
        print_failover(failover, report["failover_threads"])


def shortened(words: list[str], limit: int = 12) -> str:
    return " ".join(words[:limit]) + (f" ... (+{len(words) - limit} words)" if len(words) > limit else "")


def print_failover(figures: dict, threads: int) -> None:
    print(f"\nfailover: {FAILOVER_SERVERS} servers x {threads} threads; {figures['recording']} "
          f"({figures['audio_s']:.1f} s) streamed at {figures['speed']:.1f}x real time; SIGKILL of "
          f"{figures['killed_endpoint'] or '(none)'} after {figures['kill_audio_s']:.1f} s of audio "
          f"({figures['kill_wall_s']:.1f} s into the stream)")
    for name, error in figures["errors"].items():
        print(f"  THE STREAM {'WITH' if name == 'killed' else 'WITHOUT'} THE KILL RAISED "
              f"{error.strip().splitlines()[-1]} (traceback in the JSON and below)")
    budget_s = 1.0 + figures["decode_step_s"]
    first_final_s = figures["kill_to_first_final_s"]
    lines = [
        ("kill -> SDK leaves the endpoint (its log)", f"{figures['kill_to_sdk_left_s']:.3f} s"),
        ("kill -> first update from the other", f"{figures['kill_to_first_update_s']:.3f} s "
         f"({figures['first_update_after_kill']!r})"),
        ("kill -> first update with words from it", f"{figures['kill_to_first_words_s']:.3f} s"),
        ("kill -> first final from the other", f"{first_final_s:.3f} s   target < 1 s + one decode step "
         f"({figures['decode_step_s']:.2f} s) = {budget_s:.2f} s: {'met' if first_final_s < budget_s else 'MISSED'}"),
        ("last final word end before the kill", f"{figures['last_final_end_before_kill_s']:.2f} s of audio"),
        ("resumed on the other from", f"{figures['resumed_from_s']:.2f} s of audio ({figures['new_endpoint']})"),
        ("WER% with kill vs reference", f"{figures['wer_killed_ref']:.1f}"),
        ("WER% without kill vs reference", f"{figures['wer_plain_ref']:.1f}"),
        ("WER% with kill vs without kill", f"{figures['wer_killed_plain']:.1f}"),
        ("final words at the seam", figures["seam"]["text"]),
        ("repeated at the seam", ", ".join(repr(words) for words in figures["seam"]["repeated_at_seam"]) or "none"),
        ("gap at the seam", f"{figures['seam']['gap_s']:+.2f} s (first new word start - last old word end)"),
        ("near the seam vs without kill", f"extra [{shortened(figures['extra_near_seam'])}], "
         f"lost [{shortened(figures['lost_near_seam'])}] "
         f"({figures['differing_spans_anywhere']} differing spans in the whole transcript)"),
    ]
    for label, value in lines:
        print(f"  {label:<42}{value}")
    for name, error in figures["errors"].items():
        print(f"  the stream {'with' if name == 'killed' else 'without'} the kill raised:\n{error}")


def run_benchmark(args: argparse.Namespace, tap: LogTap) -> dict:
    all_items = load_items(args.speech_dir)
    items = all_items[: args.files] if args.files else all_items
    warmup = items[0]
    beam_size = ServerSettings.load(server_flags(0, args.threads, args.model)).beam_size  # as the servers read it
    scaled_threads = max(1, args.threads // SCALED_SERVERS)
    report: dict = {"machine": machine(), "model": args.model, "model_path": model_path(args.model),
                    "beam_size": beam_size, "sdk_version": getattr(transcriber_sdk, "__version__", "dev"),
                    "args": {name: str(value) for name, value in vars(args).items()}}
    print(f"machine: {report['machine']}", flush=True)

    log.info("direct faster-whisper, %d thread(s), %d files", args.threads, len(items))
    direct = run_direct(items, warmup, args, beam_size)
    log.info("SDK over 1 server x %d thread(s)", args.threads)
    # 1 in flight isolates the SDK's and gRPC's own cost; the CLI's 2 per endpoint is the figure users get.
    serial, one = run_sdk(1, args.threads, (1, JOBS_PER_ENDPOINT), items, warmup, args)
    log.info("SDK over %d servers x %d thread(s)", SCALED_SERVERS, scaled_threads)
    [scaled] = run_sdk(SCALED_SERVERS, scaled_threads, (JOBS_PER_ENDPOINT * SCALED_SERVERS,), items, warmup, args)
    runs = [direct, serial, one, scaled]
    report["batch"] = {
        "files": len(items), "audio_s": sum(item["duration_s"] for item in items), "warmup": warmup["id"],
        "rows": [batch_row(run, items, direct) for run in runs],
        "sdk_overhead_1_server": 1 - one.throughput / direct.throughput,
        "sdk_overhead_1_server_1_in_flight": 1 - serial.throughput / direct.throughput,
        "speedup_4_vs_1": scaled.throughput / one.throughput, "threads_4": SCALED_SERVERS * scaled_threads,
        "errors": {run.name: run.errors for run in runs},
        "texts": {run.name: run.texts for run in runs}, "latencies_s": {run.name: run.latencies_s for run in runs},
    }
    if not args.skip_failover:
        report["failover"], report["failover_raw"] = run_failover(all_items, args, tap)
        report["failover_threads"] = args.threads
    return report


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    tap = LogTap()
    logging.getLogger("transcriber_sdk").addHandler(tap)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM unwinds like Ctrl-C: servers are stopped
    started_s = time.monotonic()
    try:
        report = run_benchmark(args, tap)
    except KeyboardInterrupt:
        sys.exit("sdk_bench: interrupted; every server it started was stopped")
    except (RuntimeError, ValueError, OSError) as error:
        sys.exit(f"sdk_bench: {error}")
    report["runtime_s"] = time.monotonic() - started_s
    print()
    print_report(report)
    print(f"\nruntime {report['runtime_s']:.0f} s; raw figures: {args.json}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
