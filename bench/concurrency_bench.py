"""Concurrency benchmark: many real-time streams on one machine, transcriber and WhisperLive side by side.

Run it from the repository root, after `scripts/setup.sh server,test,bench`:

    .venv/bin/python bench/concurrency_bench.py                                   # both systems, 1-16 streams
    .venv/bin/python bench/concurrency_bench.py --systems transcriber --streams 1,8 --long-minutes 0

For each system and each number of streams N: a fresh server (same model, same threads), then N
clients at once. Each client streams a program of the long recordings of the speech set (each
recording one call), rotated so that concurrent clients play different audio, at real-time pace;
client k starts k * 0.37 s after the first, as people do not join in step. Reported, pooled over
every word of every client: WER (against the human reference and against offline faster-whisper
with the same model), first-interim and final lag (median, p90: a word's end in the audio to the
update that carried it), end-of-stream latency, server CPU seconds per audio second, peak server
memory, and the largest N held with p90 final lag <= 3 s. Then one 10-minute stream (the long
recordings back to back, repeated), with `--long-streams` clients beside it, for lag over time.
WhisperLive (PyPI whisper-live, faster_whisper backend) runs from a virtual environment the
benchmark creates (bench/whisperlive_env.py). Figures go to --out as JSON and PNG plots.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import time
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
LONG_ID = "ljspeech_LJ001-0001_0032_long"  # 231 s: kept for the long stream, so a level takes ~2.5 min


@dataclass(frozen=True)
class Level:
    system: str
    streams: int
    figures: dict  # stream_bench.figures() pooled over every call of every client
    failed: list[str]  # calls that ended in an error (refused, dropped)
    calls: list[dict]  # per call: recording, WER against the reference and offline, the texts
    peak_mib: float
    wall_s: float


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--speech-dir", type=Path,
                        default=Path(os.environ.get("TRANSCRIBER_SPEECH_DIR", sb.DEFAULT_SPEECH_DIR)))
    parser.add_argument("--streams", default="1,2,4,8,16", help="numbers of concurrent clients")
    parser.add_argument("--systems", default="transcriber,whisperlive")
    parser.add_argument("--ids", default="", help=f"the program, comma-separated; default: recordings >= "
                                                  f"{sb.LONG_S:.0f} s but {LONG_ID}")
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


def run_level(system: str, streams: int, programs: list[list[tuple[dict, bytes, sb.Offline]]],
              args: argparse.Namespace) -> Level:
    server, port = start_server(system, args)
    try:
        warm_up(system, port, programs[0][0][1])
        process = psutil.Process(server.pid)
        cpu_before_s, started = sb.cpu_s(process), time.monotonic()

        async def everyone() -> list[tuple[list[sb.Measured], list[str]]]:
            return await asyncio.gather(*(client_program(system, port, programs[index % len(programs)],
                                                         index * STAGGER_S) for index in range(streams)))

        results = asyncio.run(everyone())
        wall_s = time.monotonic() - started
        cpu_used_s = sb.cpu_s(process) - cpu_before_s
        peak_mib = sb.memory_mib(server.pid, "VmHWM")
    finally:
        stop_server(server)
    measured = [one for calls, _ in results for one in calls]
    failed = [why for _, failures in results for why in failures]
    figures = sb.figures(f"{system} x{streams}", measured) if measured else {}
    if figures:  # over all the audio sent, failed calls included
        sent_s = sum(item["duration_s"] for index in range(streams) for item, _, _ in programs[index % len(programs)])
        figures["cpu_s_per_audio_s"] = cpu_used_s / sent_s
    calls = [{"id": one.id, "wer_stream_ref": sb.wer_percent([one.texts["reference"]], [one.texts["stream"]]),
              "wer_offline_ref": sb.wer_percent([one.texts["reference"]], [one.texts["offline"]]), **one.texts}
             for one in measured]
    return Level(system, streams, figures, failed, calls, peak_mib, wall_s)


# -- the long stream -------------------------------------------------------------------------


def long_program(items: list[dict], offline: dict[str, sb.Offline], args: argparse.Namespace) -> tuple[dict, bytes, sb.Offline]:
    """The recordings back to back, repeated to --long-minutes, with the offline words shifted to match."""
    target_samples = int(args.long_minutes * 60 * RATE)
    parts, words, texts, offline_texts, offset = [], [], [], [], 0
    while offset < target_samples:
        for item in items:
            pcm, _ = read_pcm16(str(args.speech_dir / item["file"]))
            samples = np.frombuffer(pcm, dtype="<i2")
            parts.append(samples)
            words += [Word(word.text, word.start_s + offset / RATE, word.end_s + offset / RATE, word.probability)
                      for word in offline[item["id"]].words]
            texts.append(item["text"])
            offline_texts.append(offline[item["id"]].text)
            offset += samples.size
            if offset >= target_samples:
                break
    pcm = np.concatenate(parts).astype("<i2").tobytes()
    item = {"id": f"long_{args.long_minutes:g}min", "duration_s": offset / RATE, "text": " ".join(texts)}
    return item, pcm, sb.Offline(text=" ".join(offline_texts), words=tuple(words))


def run_long(system: str, long: tuple[dict, bytes, sb.Offline], programs: list, args: argparse.Namespace) -> dict:
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


def held(levels: list[Level], system: str) -> int:
    """The largest number of streams whose p90 final lag stayed at or below the bar, none failing."""
    good = [level.streams for level in levels if level.system == system and level.figures and not level.failed
            and level.figures["final_lag_p90_s"] <= LAG_BAR_S]
    return max(good, default=0)


def print_levels(levels: list[Level]) -> None:
    header = ("system", "N", "WER%", "off WER%", "final p50", "final p90", "interim p50", "interim p90", "end s",
              "CPU/aud", "peak MiB", "failed")
    print("".join(f"{name:>12}" for name in header))
    for level in levels:
        f = level.figures or {key: math.nan for key in ("wer_stream_ref", "wer_offline_ref", "final_lag_p50_s",
                                                        "final_lag_p90_s", "interim_lag_p50_s", "interim_lag_p90_s",
                                                        "end_latency_s", "cpu_s_per_audio_s")}
        row = (level.system, level.streams, f["wer_stream_ref"], f["wer_offline_ref"], f["final_lag_p50_s"],
               f["final_lag_p90_s"], f["interim_lag_p50_s"], f["interim_lag_p90_s"], f["end_latency_s"],
               f["cpu_s_per_audio_s"], level.peak_mib, len(level.failed))
        print("".join(f"{value:>12}" if isinstance(value, (str, int)) else f"{value:>12.2f}" for value in row))
    for system in sorted({level.system for level in levels}):
        print(f"{system}: held {held(levels, system)} streams at p90 final lag <= {LAG_BAR_S:g} s")


def plot(levels: list[Level], longs: list[dict], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for system in sorted({level.system for level in levels}):
        rows = [level for level in levels if level.system == system and level.figures]
        for key, style in (("final_lag_p50_s", "-o"), ("final_lag_p90_s", "--s")):
            axis.plot([level.streams for level in rows], [level.figures[key] for level in rows], style,
                      label=f"{system} {'median' if 'p50' in key else 'p90'}")
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
              "held": {system: held(levels, system) for system in {level.system for level in levels}}}
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
    items = [item for item in sb.load_items(args.speech_dir, args.ids) if args.ids or item["id"] != LONG_ID]
    print(f"offline reference: {len(items)} recordings", flush=True)
    long_items = (items if args.ids else sb.load_items(args.speech_dir, "")) if args.long_minutes else []
    offline = sb.transcribe_offline(list({item["id"]: item for item in items + long_items}.values()),
                                    argparse.Namespace(model=args.model, device=args.device, cpu_threads=args.cpu_threads,
                                                       speech_dir=args.speech_dir))
    recordings = [(item, read_pcm16(str(args.speech_dir / item["file"]))[0], offline[item["id"]]) for item in items]
    programs = [recordings[start:] + recordings[:start] for start in range(len(recordings))]
    levels: list[Level] = []
    for system in [name.strip() for name in args.systems.split(",") if name.strip()]:
        for streams in [int(count) for count in args.streams.split(",")]:
            level = run_level(system, streams, programs, args)
            levels.append(level)
            print(f"{system} x{streams}: {level.wall_s:.0f} s, final p90 {level.figures.get('final_lag_p90_s', math.nan):.2f} s, "
                  f"{len(level.failed)} failed", flush=True)
            (args.out / "levels.json").write_text(json.dumps([asdict(one) for one in levels], indent=1) + "\n")
    longs = []
    if args.long_minutes:
        long = long_program(long_items, offline, args)
        for system in [name.strip() for name in args.long_systems.split(",") if name.strip()]:
            longs.append(run_long(system, long, programs, args))
            print(f"long stream, {system}: final p50/p90 {longs[-1]['figures']['final_lag_p50_s']:.2f} / "
                  f"{longs[-1]['figures']['final_lag_p90_s']:.2f} s", flush=True)
    device, compute_type = resolve_device(args.device, "auto")
    report = {"levels": [asdict(level) for level in levels], "long": longs,
              "held": {system: held(levels, system) for system in {level.system for level in levels}},
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
