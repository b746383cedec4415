"""`transcriber`: the batch command line. Flags -> AsyncClient -> transcripts on disk; wiring only.

    transcriber transcribe FILE|DIR... [--format txt|json|srt|vtt] [--output-dir D] [--jobs N]
    transcriber stream FILE [--speed X]
    transcriber endpoints

Exit status: 0 done, 1 a file or endpoint failed (or a TranscriberError), 2 bad usage, 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import soundfile
from rich.console import Console
from rich.live import Live
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, ProgressColumn, SpinnerColumn, Task, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ._async_client import AsyncClient
from ._core import chunked, read_pcm16
from .exceptions import TranscriberError
from .formats import FORMATS, render
from .models import EndpointStatus, TranscriptUpdate

T = TypeVar("T", int, float)
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".mp3", ".m4a", ".opus", ".webm"})


class UsageError(Exception):
    """The command line asks for something that cannot be done as asked (exit 2)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; returns the exit status (argparse itself exits 2 on bad flags)."""
    args = build_parser().parse_args(argv)
    err = Console(stderr=True)
    handler = (RichHandler(console=err, show_time=False, show_path=False) if err.is_terminal
               else logging.StreamHandler())  # a log file gets whole lines, not a layout for 80 columns
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(message)s" if err.is_terminal else "%(levelname)s %(name)s: %(message)s",
                        handlers=[handler])
    try:
        return asyncio.run(args.run(args))
    except KeyboardInterrupt:  # asyncio.run has cancelled the command and closed its channels by now
        print("interrupted", file=sys.stderr)
        return 130
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ValueError as error:  # a bad setting (flag or TRANSCRIBER_* variable), found by ClientSettings
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return 2
    except (TranscriberError, OSError) as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--endpoints", help="comma-separated host:port or https:// URLs "
                                            "(default: TRANSCRIBER_ENDPOINTS, else 127.0.0.1:8080)")
    common.add_argument("-v", "--verbose", action="store_true", help="log failovers and connections")
    parser = argparse.ArgumentParser(prog="transcriber", description="Transcribe audio with transcriber servers.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    batch = commands.add_parser("transcribe", parents=[common], help="transcribe files and folders to disk",
                                description="Transcribe audio files (folders are searched recursively for "
                                            f"{' '.join(sorted(AUDIO_SUFFIXES))}).")
    batch.add_argument("paths", nargs="+", metavar="FILE|DIR")
    batch.add_argument("--language", help="language code, e.g. ru; several, e.g. ru,en: detected among them "
                                          "(default: detected per file)")
    batch.add_argument("--translate", action="store_true", help="write the speech in English (multilingual models)")
    batch.add_argument("--format", choices=FORMATS, default="txt")
    batch.add_argument("--output-dir", type=Path, default=Path("."), help="where outputs go (default: here)")
    batch.add_argument("--jobs", type=_positive_int, help="files in flight at once (default: 2 per endpoint)")
    batch.add_argument("--overwrite", action="store_true", help="redo files whose output already exists")
    batch.add_argument("--timeout-s", type=_positive_float, help="deadline per file, failovers included")
    batch.set_defaults(run=transcribe_command)

    live = commands.add_parser("stream", parents=[common], help="stream a file paced like live audio",
                               description="Stream a file as if it were live and print the text as it comes.")
    live.add_argument("file")
    live.add_argument("--language", help="language code, e.g. ru; several, e.g. ru,en: detected among them "
                                         "(default: detected)")
    live.add_argument("--translate", action="store_true", help="write the speech in English (multilingual models)")
    live.add_argument("--switch-languages", action="store_true",
                      help="detect the language of each utterance afresh (speakers who switch, e.g. --language ru,en)")
    live.add_argument("--speed", type=_positive_float, default=1.0, help="times faster than real time")
    live.set_defaults(run=stream_command)

    status = commands.add_parser("endpoints", parents=[common], help="show each endpoint's health and load")
    status.set_defaults(run=endpoints_command)
    return parser


# -- transcribe ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    source: Path
    output: Path
    audio_s: float | None = None  # from the file's header; None when soundfile cannot tell (m4a, webm)


@dataclass
class BatchReport:
    done: int = 0
    skipped: int = 0
    audio_s: float = 0.0
    failures: list[tuple[Path, str]] = field(default_factory=list)


async def transcribe_command(args: argparse.Namespace) -> int:
    sources = find_audio(args.paths)
    jobs = plan(sources, args.output_dir, args.format)
    todo = [replace(job, audio_s=audio_seconds(job.source)) for job in jobs
            if args.overwrite or not job.output.exists()]
    report = BatchReport(skipped=len(jobs) - len(todo))
    err = Console(stderr=True, highlight=False)
    if report.skipped:
        err.print(f"skipping {report.skipped} file(s) whose output exists (--overwrite redoes them)")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    if todo:
        async with AsyncClient(args.endpoints, timeout_s=args.timeout_s) as client:
            in_flight = args.jobs or 2 * len(client.endpoints)
            with batch_progress(err) as progress:
                await run_batch(client, todo, args, asyncio.Semaphore(in_flight), progress, report)
    print_summary(report, time.monotonic() - started, err)
    return 1 if report.failures else 0


def find_audio(paths: Sequence[str]) -> list[Path]:
    """Files named, and audio files under folders named, each once, in a stable order.

    Raises:
        UsageError: a path does not exist, or nothing to transcribe was found.
    """
    found: dict[Path, Path] = {}
    for name in paths:
        path = Path(name)
        if path.is_dir():
            candidates = sorted(item for item in path.rglob("*")
                                if item.suffix.lower() in AUDIO_SUFFIXES and item.is_file())
        elif path.exists():
            candidates = [path]  # named on purpose: taken whatever its suffix
        else:
            raise UsageError(f"no such file or directory: {name}")
        for candidate in candidates:
            found.setdefault(candidate.resolve(), candidate)
    if not found:
        raise UsageError(f"no audio files ({' '.join(sorted(AUDIO_SUFFIXES))}) in {' '.join(paths)}")
    return list(found.values())


def plan(sources: Sequence[Path], output_dir: Path, format_name: str) -> list[Job]:
    """A job per source, writing `<output_dir>/<stem>.<format>`.

    Raises:
        UsageError: two sources share a stem, so one output would overwrite the other.
    """
    by_output: dict[Path, list[Path]] = {}
    for source in sources:
        by_output.setdefault(output_dir / f"{source.stem}.{format_name}", []).append(source)
    clashes = {output: clashing for output, clashing in by_output.items() if len(clashing) > 1}
    if clashes:
        lines = "; ".join(f"{output} <- {', '.join(map(str, clashing))}" for output, clashing in clashes.items())
        raise UsageError(f"inputs with the same name would write the same output: {lines}. "
                         "Rename them or transcribe them in separate runs with different --output-dir")
    return [Job(source, output) for output, (source,) in by_output.items()]


def audio_seconds(path: Path) -> float | None:
    try:
        return float(soundfile.info(str(path)).duration)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError):
        return None


async def run_batch(client: AsyncClient, jobs: Sequence[Job], args: argparse.Namespace, slots: asyncio.Semaphore,
                    progress: Progress, report: BatchReport) -> None:
    """Every job, at most `slots` at once; a failed file is reported, never stops the others."""
    total_s = sum(job.audio_s or 0.0 for job in jobs)  # grows by files whose length shows only once done
    bar = progress.add_task("transcribing", total=total_s, files=f"0/{len(jobs)} files")

    async def one(job: Job) -> None:
        nonlocal total_s
        async with slots:
            try:
                transcript = await client.transcribe_file(job.source, language=args.language, translate=args.translate)
                await asyncio.to_thread(write_atomic, job.output, render(transcript, args.format))
            except (TranscriberError, OSError) as error:
                report.failures.append((job.source, _one_line(error)))
                total_s -= job.audio_s or 0.0
                audio_s = 0.0
            else:
                audio_s = job.audio_s if job.audio_s is not None else transcript.duration_s
                total_s += audio_s if job.audio_s is None else 0.0
                report.done += 1
                report.audio_s += audio_s
        progress.update(bar, total=total_s, advance=audio_s,
                        files=f"{report.done + len(report.failures)}/{len(jobs)} files")

    await asyncio.gather(*(one(job) for job in jobs))


def write_atomic(path: Path, text: str) -> None:
    """Writes through a temporary file in the same folder, so a reader (or a rerun that skips
    existing outputs) never sees half a transcript."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


class AudioColumn(ProgressColumn):
    """Audio transcribed so far and in all, as hours:minutes."""

    def render(self, task: Task) -> Text:
        return Text(f"{hours_minutes(task.completed)}/{hours_minutes(task.total or 0.0)} h:m audio")


class SpeedColumn(ProgressColumn):
    """Audio seconds done per wall second since the start."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        return Text(f"{task.completed / elapsed:.1f}× real time" if elapsed > 0 and task.completed else "")


def batch_progress(console: Console) -> Progress:
    """A bar for people: off when stderr is a pipe or a log file, where it would only be noise."""
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), AudioColumn(),
                    TextColumn("{task.fields[files]}"), SpeedColumn(), TimeElapsedColumn(), console=console,
                    disable=not console.is_terminal)


def print_summary(report: BatchReport, wall_s: float, err: Console) -> None:
    speed = f", {report.audio_s / wall_s:.1f}× real time" if report.audio_s and wall_s > 0 else ""
    print(f"{report.done} done, {report.skipped} skipped, {len(report.failures)} failed; "
          f"{clock(report.audio_s)} of audio in {wall_s:.1f} s{speed}")
    for source, error in report.failures:
        err.print(f"failed: {source}: {error}", markup=False, soft_wrap=True)


def hours_minutes(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes // 60}:{minutes % 60:02d}"


def clock(seconds: float) -> str:
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


# -- stream --------------------------------------------------------------------------------------


async def stream_command(args: argparse.Namespace) -> int:
    pcm, rate = await asyncio.to_thread(read_pcm16, args.file)
    chunks = chunked(pcm, rate, realtime=True, speed=args.speed)  # blocking pacing: the client pulls it in a thread
    console = Console(highlight=False)
    async with AsyncClient(args.endpoints) as client:
        if console.is_terminal:
            await show_transcript(client.stream(chunks, rate, language=args.language, translate=args.translate,
                                               language_per_utterance=args.switch_languages), console)
        else:  # a pipe or a file: final lines only, one per final result
            async for update in client.stream(chunks, rate, language=args.language, translate=args.translate,
                                              language_per_utterance=args.switch_languages):
                if update.is_final and update.text.strip():
                    print(update.text.strip(), flush=True)
    return 0


async def show_transcript(updates: AsyncIterator[TranscriptUpdate], console: Console) -> None:
    """Shows a stream's updates as they come (see TranscriptView) until the stream ends."""
    with Live(Text(), console=console, auto_refresh=False, transient=True) as live:
        view = TranscriptView(live)
        try:
            async for update in updates:
                view.show(update)
        finally:
            view.flush()


class TranscriptView:
    """Settled text flows as a paragraph: the line being written and the grey interim tail are redrawn
    in place, and a line is printed for good at the end of a sentence or when it fills the terminal."""

    def __init__(self, live: Live) -> None:
        self._live = live
        self._line = ""

    def show(self, update: TranscriptUpdate) -> None:
        if update.is_final and update.text.strip():
            self._line = f"{self._line} {update.text.strip()}".strip()
            if self._line.endswith((".", "?", "!")) or len(self._line) >= self._live.console.width:
                self.flush()
        tail = "" if update.is_final else update.text.strip()
        view = Text(self._line + (" " if self._line and tail else ""))
        view.append(tail, style="grey50")
        self._live.update(view, refresh=True)

    def flush(self) -> None:
        """Prints the line being written for good (call it at the end, too)."""
        if self._line:
            self._live.update(Text(), refresh=True)  # first: a print redraws the live area under it
            self._live.console.print(self._line, markup=False)
            self._line = ""


# -- endpoints -----------------------------------------------------------------------------------


async def endpoints_command(args: argparse.Namespace) -> int:
    async with AsyncClient(args.endpoints) as client:
        statuses = await client.endpoint_status()
    console = Console(highlight=False)
    console.print(status_table(statuses))
    for status in statuses:  # errors are long: on lines of their own, not squeezed into a column
        if status.error:
            console.print(f"{status.endpoint}: {_one_line(status.error)}", markup=False, soft_wrap=True)
    return 0 if all(status.health == "SERVING" for status in statuses) else 1


def status_table(statuses: Sequence[EndpointStatus]) -> Table:
    table = Table("endpoint", "health", "model", "streams", "draining", "latency")
    for column in table.columns:
        column.no_wrap = True
    for status in statuses:
        up = status.health == "SERVING"
        reached = status.health != "UNREACHABLE"
        table.add_row(status.endpoint, Text(status.health, style="green" if up else "red"), status.model,
                      f"{status.active_streams}/{status.max_streams}" if reached else "",
                      "yes" if status.draining else "", f"{status.latency_ms:.0f} ms" if reached else "")
    return table


# -- helpers -------------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    return _positive(int, text, "a whole number")


def _positive_float(text: str) -> float:
    return _positive(float, text, "a number")


def _positive(kind: Callable[[str], T], text: str, noun: str) -> T:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {noun}: {text}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _one_line(error: BaseException | str) -> str:
    return " ".join(str(error).split()) or type(error).__name__
