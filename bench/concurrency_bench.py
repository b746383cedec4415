"""Concurrency benchmark: many real-time streams on one machine, transcriber and WhisperLive side by side.

Run it from the repository root, after `scripts/setup.sh server,test,bench`:

    .venv/bin/python bench/concurrency_bench.py                                   # both systems, 1-16 streams
    .venv/bin/python bench/concurrency_bench.py --systems transcriber --streams 1,8 --long-minutes 0

For each system, start pattern and number of streams N: a fresh server (same model, same threads), then
N clients, each streaming one long-form recording (>= 150 s: the 231 s LJ Speech item, or one reader's
items joined, or the other items joined in manifest order) at real-time pace; concurrent clients play
different forms, or the same one in another order. Clients start together (the worst case: every
step lands at once) or staggered 0.37 s apart. Reported, pooled over every word of every client and for
the worst stream: WER (against the human reference and against offline faster-whisper with the same
model), first-interim and final lag (median, p90: a word's end in the audio to the update that carried
it), end-of-stream latency, server CPU seconds per audio second, peak server memory, and the largest N
held: every stream's p90 final lag <= 3 s, pooled WER within 0.5 point of offline, no call failed.
Then one 10-minute stream (the forms back to back, repeated), with `--long-streams` clients
beside it, for lag over time. WhisperLive (PyPI whisper-live, faster_whisper backend) runs from a virtual
environment the benchmark creates (bench/whisperlive_env.py). Figures go to --out as JSON and PNG plots.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import psutil

import stream_bench as sb
import whisperlive_client as wl
import whisperlive_env
from transcriber_sdk import AsyncClient, TranscriberError, Word, chunked, read_pcm16
from transcriber_server.engine import resolve_device
from transcriber_server.models import EMBEDDED_MODEL, model_path

RATE = 16_000
CHUNK_S = 0.1
STAGGER_S = 0.37  # between client starts
LAG_BAR_S = 3.0  # "held": p90 final lag at or below this
FORM_S = 150.0  # a long-form stream is at least this long
WER_BAR = 0.5  # "held": pooled WER at most this many points above offline
STARTS = {"together": 0.0, "staggered": STAGGER_S}  # seconds between client starts


@dataclass(frozen=True)
class Level:
    system: str
    start: str  # a key of STARTS
    streams: int
    figures: dict  # stream_bench.figures() pooled over every call of every client
    per_stream: list[dict]  # stream_bench.figures() of each client
    failed: list[str]  # calls that ended in an error (refused, dropped)
    calls: list[dict]  # per call: recording, WER against the reference and offline, the texts
    peak_mib: float
    wall_s: float


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--speech-dir", type=Path,
                        default=Path(os.environ.get("TRANSCRIBER_SPEECH_DIR", sb.DEFAULT_SPEECH_DIR)))
    parser.add_argument("--streams", default="1,2,4,8,16", help="numbers of concurrent clients")
    parser.add_argument("--starts", default="together,staggered", help="start patterns: together, staggered")
    parser.add_argument("--systems", default="transcriber,whisperlive")
    parser.add_argument("--ids", default="", help="the recordings to build streams from, comma-separated; default: all")
    parser.add_argument("--form-s", type=float, default=FORM_S, help="the shortest long-form stream")
    parser.add_argument("--model", default=EMBEDDED_MODEL, help="tiny.en (embedded) or a faster-whisper name or path")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--cpu-threads", type=int, default=2)
    parser.add_argument("--long-minutes", type=float, default=10.0, help="the long stream; 0: skip it")
    parser.add_argument("--long-streams", type=int, default=1, help="clients during the long stream, it included")
    parser.add_argument("--long-systems", default="transcriber")
    parser.add_argument("--server-flag", action="append", default=[],
                        help="extra transcriber-server flag, e.g. --server-flag=--beam-size=1")
    parser.add_argument("--whisperlive-venv", type=Path, default=Path(".bench-venvs/whisperlive"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/concurrency"))
    parser.add_argument("--merge", type=Path, nargs="*", default=[],
                        help="no run: print and plot the report.json of earlier runs (folders) together, into --out")
    return parser.parse_args(argv)


# -- servers -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(system: str, args: argparse.Namespace) -> tuple[subprocess.Popen, int]:
    port = free_port()
    if system == "transcriber":
        # Admission is off here: the benchmark measures what N streams do to latency, not who gets in.
        flags = ["--port", str(port), "--model", args.model, "--device", args.device,
                 # The same threads in all: on a CPU as 1-thread decode workers; one worker (one model copy) on a GPU.
                 "--decode-workers", "1" if args.device == "cuda" else str(args.cpu_threads),
                 "--cpu-threads", str(args.cpu_threads) if args.device == "cuda" else "1",
                 "--max-streams", "64", "--admit-max-lag-s", "1e9",
                 "--admit-max-cycle-s", "1e9", "--log-level", "WARNING", *args.server_flag]
        server = subprocess.Popen([sys.executable, "-m", "transcriber_server", *flags])
        sb.wait_serving(server, port)
    else:
        python = whisperlive_env.ensure_venv(args.whisperlive_venv)
        command = whisperlive_env.server_command(python, port, model_path(args.model), args.cpu_threads, args.device)
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(server, port)
    return server, port


def wait_listening(server: subprocess.Popen, port: int) -> None:
    deadline_s = time.monotonic() + sb.HEALTH_TIMEOUT_S
    while time.monotonic() < deadline_s:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with code {server.returncode} before listening")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listened on port {port} within {sb.HEALTH_TIMEOUT_S:.0f} s")


def stop_server(server: subprocess.Popen) -> None:
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def warm_up(system: str, port: int, pcm: bytes) -> None:
    """One short stream first: WhisperLive loads its model on the first connection."""
    asyncio.run(stream_call(system, port, pcm[: 3 * RATE * 2], realtime=False))


# -- clients ---------------------------------------------------------------------------------


async def paced(pcm: bytes, run: sb.StreamRun, realtime: bool) -> AsyncIterator[bytes]:
    """100 ms chunks on a monotonic schedule, as a microphone delivers them."""
    for index, chunk in enumerate(chunked(pcm, RATE, chunk_s=CHUNK_S)):
        if index == 0:
            run.t0_s = time.monotonic()  # the clock starts with the first chunk, as WhisperLive's does
        if realtime:
            await asyncio.sleep(max(run.t0_s + index * CHUNK_S - time.monotonic(), 0.0))
        run.last_audio_s = time.monotonic()
        yield chunk


async def stream_call(system: str, port: int, pcm: bytes, realtime: bool = True) -> tuple[sb.StreamRun, str | None]:
    """One recording through one system: the stamped updates, and the final text (None: ours, from finals)."""
    if system == "whisperlive":
        run = await wl.stream_whisperlive(port, pcm, RATE, chunk_s=CHUNK_S, realtime=realtime)
        seen = wl.timeline(run)
        arrivals = [sb.Arrival(segment.at_s, True, segment.text, _words(segment.text)) for segment in seen.completed]
        arrivals += [sb.Arrival(segment.at_s, False, segment.text, _words(segment.text)) for segment in seen.interims]
        if seen.tail_uncompleted:  # never completed, but in its transcript: final when the connection ended
            ended_at = run.closed_at if not math.isnan(run.closed_at) else run.arrivals[-1].at_s
            tail = run.arrivals[-1].segments[-1].text.strip()  # what wl.timeline appended to the transcript
            arrivals.append(sb.Arrival(ended_at, True, tail, _words(tail)))
        stamped = sb.StreamRun(t0_s=run.t0, last_audio_s=run.last_audio_at)
        stamped.arrivals = sorted(arrivals, key=lambda arrival: arrival.at_s)
        return stamped, seen.final_text
    stamped = sb.StreamRun(t0_s=math.nan)  # set by the first chunk
    async with AsyncClient(endpoints=[f"127.0.0.1:{port}"]) as client:
        async for update in client.stream(paced(pcm, stamped, realtime), sample_rate=RATE, language="en"):
            stamped.arrivals.append(sb.Arrival(time.monotonic(), update.is_final, update.text, update.words))
    return stamped, None


def _words(text: str) -> tuple[Word, ...]:
    return tuple(Word(word, 0.0, 0.0, 1.0) for word in text.split())


async def client_program(system: str, port: int, program: list[tuple[dict, bytes, sb.Offline]],
                         delay_s: float) -> tuple[list[sb.Measured], list[str]]:
    await asyncio.sleep(delay_s)
    measured, failed = [], []
    for item, pcm, offline in program:
        try:
            run, final_text = await stream_call(system, port, pcm)
        except (TranscriberError, wl.WhisperLiveError, OSError) as error:
            failed.append(f"{item['id']}: {error}")
            continue
        one = sb.measure(item, offline, run, cpu_used_s=0.0)  # CPU is taken for the whole level
        if final_text is not None:
            one = replace(one, texts={**one.texts, "stream": final_text})
        measured.append(one)
    return measured, failed


def run_level(system: str, start: str, programs: list[list[tuple[dict, bytes, sb.Offline]]],
              args: argparse.Namespace) -> Level:
    """One client per program, started together or staggered."""
    server, port = start_server(system, args)
    try:
        warm_up(system, port, programs[0][0][1])
        process = psutil.Process(server.pid)
        cpu_before_s, started = sb.cpu_s(process), time.monotonic()

        async def everyone() -> list[tuple[list[sb.Measured], list[str]]]:
            return await asyncio.gather(*(client_program(system, port, program, index * STARTS[start])
                                          for index, program in enumerate(programs)))

        results = asyncio.run(everyone())
        wall_s = time.monotonic() - started
        cpu_used_s = sb.cpu_s(process) - cpu_before_s
        peak_mib = sb.memory_mib(server.pid, "VmHWM")
    finally:
        stop_server(server)
    measured = [one for calls, _ in results for one in calls]
    failed = [why for _, failures in results for why in failures]
    figures = sb.figures(f"{system} x{len(programs)}", measured) if measured else {}
    if figures:  # over all the audio sent, failed calls included
        figures["cpu_s_per_audio_s"] = cpu_used_s / sum(item["duration_s"] for program in programs
                                                        for item, _, _ in program)
    per_stream = [sb.figures(f"client {index}", calls) for index, (calls, _) in enumerate(results) if calls]
    calls = [{"id": one.id, "wer_stream_ref": sb.wer_percent([one.texts["reference"]], [one.texts["stream"]]),
              "wer_offline_ref": sb.wer_percent([one.texts["reference"]], [one.texts["offline"]]), **one.texts}
             for one in measured]
    return Level(system, start, len(programs), figures, per_stream, failed, calls, peak_mib, wall_s)


# -- long-form streams -----------------------------------------------------------------------


def reader_of(item: dict) -> str:
    """The id without its last part: the items of one reader of one source share it (dctts_LJ001-0152)."""
    return re.sub(r"[-_][^-_]*$", "", item["id"])


def long_forms(items: list[dict], min_s: float = FORM_S) -> list[list[dict]]:
    """The speech set as long-form streams of at least `min_s`: a recording that long alone, one reader's items
    joined where they reach it, and the rest joined in manifest order (a shorter remainder joins the last)."""
    forms = [[item] for item in items if item["duration_s"] >= min_s]
    readers: dict[str, list[dict]] = defaultdict(list)
    for item in items:
        if item["duration_s"] < min_s:
            readers[reader_of(item)].append(item)
    forms += [group for group in readers.values() if sum(item["duration_s"] for item in group) >= min_s]
    rest = [item for item in items if item["duration_s"] < min_s and
            sum(other["duration_s"] for other in readers[reader_of(item)]) < min_s]
    mixed: list[list[dict]] = [[]]
    for item in rest:
        if sum(other["duration_s"] for other in mixed[-1]) >= min_s:
            mixed.append([])
        mixed[-1].append(item)
    if len(mixed) > 1 and sum(item["duration_s"] for item in mixed[-1]) < min_s:
        remainder = mixed.pop()
        mixed[-1] += remainder
    return forms + [form for form in mixed if sum(item["duration_s"] for item in form) >= min_s]


def client_forms(forms: list[list[dict]], clients: int) -> list[list[dict]]:
    """Client k plays form k mod len(forms); a second client on a form hears its items in another order."""
    chosen = []
    for index in range(clients):
        form, turn = forms[index % len(forms)], index // len(forms)
        shift = turn * 7 % len(form)
        chosen.append(form[shift:] + form[:shift])
    return chosen


def joined(items: list[dict], offline: dict[str, sb.Offline], speech_dir: Path,
           name: str) -> tuple[dict, bytes, sb.Offline]:
    """Recordings back to back as one, with the offline words shifted to match."""
    parts, words, texts, offline_texts, offset = [], [], [], [], 0
    for item in items:
        pcm, rate = read_pcm16(str(speech_dir / item["file"]))
        if rate != RATE:
            raise ValueError(f"{item['id']} is {rate} Hz; the speech set is {RATE} Hz")
        samples = np.frombuffer(pcm, dtype="<i2")
        parts.append(samples)
        words += [Word(word.text, word.start_s + offset / RATE, word.end_s + offset / RATE, word.probability)
                  for word in offline[item["id"]].words]
        texts.append(item["text"])
        offline_texts.append(offline[item["id"]].text)
        offset += samples.size
    pcm = np.concatenate(parts).astype("<i2").tobytes()
    item = {"id": name, "duration_s": offset / RATE, "text": " ".join(texts)}
    return item, pcm, sb.Offline(text=" ".join(offline_texts), words=tuple(words))


# -- the long stream -------------------------------------------------------------------------


def long_program(items: list[dict], minutes: float) -> list[dict]:
    """The recordings back to back, repeated to `minutes`."""
    program: list[dict] = []
    while sum(item["duration_s"] for item in program) < minutes * 60:
        program += items
    while program and sum(item["duration_s"] for item in program[:-1]) >= minutes * 60:
        program.pop()
    return program


def run_long(system: str, long: tuple[dict, bytes, sb.Offline], programs: list[list[tuple[dict, bytes, sb.Offline]]],
             args: argparse.Namespace) -> dict:
    """The long stream, with --long-streams - 1 clients beside it playing the program over and over."""
    server, port = start_server(system, args)
    try:
        warm_up(system, port, long[1])
        item, pcm, offline = long

        async def together() -> tuple[sb.StreamRun, str | None]:
            done = asyncio.Event()

            async def beside(index: int) -> None:
                await asyncio.sleep((index + 1) * STAGGER_S)
                while not done.is_set():
                    await client_program(system, port, programs[index % len(programs)], 0.0)

            others = [asyncio.create_task(beside(index)) for index in range(args.long_streams - 1)]
            try:
                return await stream_call(system, port, pcm)
            finally:
                done.set()
                for task in others:
                    task.cancel()
                await asyncio.gather(*others, return_exceptions=True)

        run, final_text = asyncio.run(together())
    finally:
        stop_server(server)
    one = sb.measure(item, offline, run, cpu_used_s=0.0)
    if final_text is not None:
        one = replace(one, texts={**one.texts, "stream": final_text})
    spoken = [word for word, key in zip(offline.words, sb.word_keys(offline.words)) if key]
    finals = [(key, arrival.at_s) for arrival in run.arrivals if arrival.is_final for key in sb.word_keys(arrival.words) if key]
    points = [(spoken[said].end_s, finals[heard][1] - (run.t0_s + spoken[said].end_s))
              for heard, said in sb.matched([key for key, _ in finals], sb.word_keys(spoken))]
    return {"system": system, "streams": args.long_streams, "figures": sb.figures(item["id"], [one]),
            "lag_over_time": points}


# -- report ----------------------------------------------------------------------------------


def worst_p90_s(level: Level) -> float:
    """The worst stream's p90 final lag."""
    return max((stream["final_lag_p90_s"] for stream in level.per_stream), default=math.nan)


def holds(level: Level) -> bool:
    """Every stream's p90 final lag at or below the bar, pooled WER within WER_BAR of offline, no call failed."""
    return bool(level.figures) and not level.failed and len(level.per_stream) == level.streams and \
        worst_p90_s(level) <= LAG_BAR_S and \
        level.figures["wer_stream_ref"] - level.figures["wer_offline_ref"] <= WER_BAR


def held(levels: list[Level], system: str, start: str) -> int:
    """The largest number of streams held (see holds) with one system and start pattern."""
    return max((level.streams for level in levels if level.system == system and level.start == start and holds(level)),
               default=0)


def held_table(levels: list[Level]) -> dict[str, dict[str, int]]:
    return {system: {start: held(levels, system, start) for start in sorted({level.start for level in levels})}
            for system in sorted({level.system for level in levels})}


def print_levels(levels: list[Level]) -> None:
    header = ("system", "start", "N", "WER%", "off WER%", "final p50", "final p90", "worst p50", "worst p90",
              "interim p50", "end s", "CPU/aud", "peak MiB", "failed")
    print("".join(f"{name:>12}" for name in header))
    for level in levels:
        f = level.figures or {key: math.nan for key in ("wer_stream_ref", "wer_offline_ref", "final_lag_p50_s",
                                                        "final_lag_p90_s", "interim_lag_p50_s", "end_latency_s",
                                                        "cpu_s_per_audio_s")}
        worst_p50_s = max((stream["final_lag_p50_s"] for stream in level.per_stream), default=math.nan)
        row = (level.system, level.start, level.streams, f["wer_stream_ref"], f["wer_offline_ref"],
               f["final_lag_p50_s"], f["final_lag_p90_s"], worst_p50_s, worst_p90_s(level), f["interim_lag_p50_s"],
               f["end_latency_s"], f["cpu_s_per_audio_s"], level.peak_mib, len(level.failed))
        print("".join(f"{value:>12}" if isinstance(value, (str, int)) else f"{value:>12.2f}" for value in row))
    for system, starts in held_table(levels).items():
        print(f"{system}: held " + ", ".join(f"{streams} streams started {start}" for start, streams in starts.items())
              + f" (every stream's p90 final lag <= {LAG_BAR_S:g} s, WER within {WER_BAR:g} point of offline)")


def plot(levels: list[Level], longs: list[dict], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for system, start in sorted({(level.system, level.start) for level in levels}):
        rows = [level for level in levels if level.system == system and level.start == start and level.figures]
        axis.plot([level.streams for level in rows], [level.figures["final_lag_p50_s"] for level in rows], "-o",
                  label=f"{system} {start}: median")
        axis.plot([level.streams for level in rows], [worst_p90_s(level) for level in rows], "--s",
                  label=f"{system} {start}: worst stream's p90")
    axis.set_xscale("log", base=2)
    axis.set_yscale("log")
    written.append(_finish(plt, figure, axis, "concurrent real-time streams", "final lag (s)",
                           "Final-result lag against the number of streams", out / "lag_vs_streams.png"))
    if longs:
        figure, axis = plt.subplots(figsize=(7, 4.5))
        for long in longs:
            points = sorted(long["lag_over_time"])
            axis.plot([at for at, _ in points], [lag for _, lag in points], ".", markersize=3,
                      label=f"{long['system']} ({long['streams']} streams)")
        written.append(_finish(plt, figure, axis, "audio time (s)", "final lag of each word (s)",
                               "Final lag over a long stream", out / "lag_over_time.png"))
    return written


def _finish(plt, figure, axis, xlabel: str, ylabel: str, title: str, path: Path) -> Path:  # type: ignore[no-untyped-def]
    """Labels a plot, marks the 3 s bar, saves it as a PNG."""
    axis.axhline(LAG_BAR_S, color="grey", linewidth=0.8)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def merge(folders: list[Path], out: Path) -> None:
    """Earlier runs (say, one per system) as one table and one set of plots."""
    reports = [json.loads((folder / "report.json").read_text()) for folder in folders]
    levels = [Level(**level) for report in reports for level in report["levels"]]
    longs = [long for report in reports for long in report["long"]]
    report = {**reports[0], "levels": [asdict(level) for level in levels], "long": longs,
              "held": held_table(levels)}
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    print_levels(levels)
    for path in plot(levels, longs, out):
        print(f"wrote {path}")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        merge(args.merge, args.out)
        return
    everything = [json.loads(line) for line in (args.speech_dir / "manifest.jsonl").read_text().splitlines()
                  if line.strip()]
    if args.ids:
        everything = sb.load_items(args.speech_dir, args.ids)
    forms = long_forms(everything, args.form_s)
    print(f"offline reference: {len(everything)} recordings; {len(forms)} long forms of "
          + ", ".join(f"{sum(item['duration_s'] for item in form):.0f} s" for form in forms), flush=True)
    offline = sb.transcribe_offline(everything, argparse.Namespace(model=args.model, device=args.device,
                                                                   cpu_threads=args.cpu_threads,
                                                                   speech_dir=args.speech_dir))
    counts = [int(count) for count in args.streams.split(",")]
    programs = [[joined(form, offline, args.speech_dir, f"{reader_of(form[0])}+{len(form) - 1} ({index})")]
                for index, form in enumerate(client_forms(forms, max(counts)))]
    levels: list[Level] = []
    for system in [name.strip() for name in args.systems.split(",") if name.strip()]:
        for start in [name.strip() for name in args.starts.split(",") if name.strip()]:
            for streams in counts:
                level = run_level(system, start, programs[:streams], args)
                levels.append(level)
                print(f"{system} {start} x{streams}: {level.wall_s:.0f} s, final p90 pooled "
                      f"{level.figures.get('final_lag_p90_s', math.nan):.2f} s, worst stream {worst_p90_s(level):.2f} s, "
                      f"{len(level.failed)} failed", flush=True)
                (args.out / "levels.json").write_text(json.dumps([asdict(one) for one in levels], indent=1) + "\n")
    longs = []
    if args.long_minutes:
        long = joined(long_program([item for form in forms for item in form], args.long_minutes), offline, args.speech_dir,
                      f"long_{args.long_minutes:g}min")
        for system in [name.strip() for name in args.long_systems.split(",") if name.strip()]:
            longs.append(run_long(system, long, programs, args))
            print(f"long stream, {system}: final p50/p90 {longs[-1]['figures']['final_lag_p50_s']:.2f} / "
                  f"{longs[-1]['figures']['final_lag_p90_s']:.2f} s", flush=True)
    device, compute_type = resolve_device(args.device, "auto")
    report = {"levels": [asdict(level) for level in levels], "long": longs,
              "held": held_table(levels),
              "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
              "model": args.model, "device": device, "compute_type": compute_type, "cpu_threads": args.cpu_threads,
              "server_flags": args.server_flag}
    (args.out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    print_levels(levels)
    for long in longs:
        print(f"long stream ({long['system']}, {long['streams']} streams): " + json.dumps(
            {key: round(value, 2) for key, value in long["figures"].items() if isinstance(value, float)}))
    for path in plot(levels, longs, args.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
