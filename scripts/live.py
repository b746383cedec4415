"""Live transcription: the microphone (or a recording played as if it were one) to AsyncClient.stream,
with settled text kept on screen and the grey interim tail rewritten in place.

Ctrl-C stops the audio; the finals of what was said still arrive before the script ends (a second
Ctrl-C quits at once).

Usage: python scripts/live.py [--device N] [--endpoints host:port,...]      the microphone (pip install '.[mic]')
       python scripts/live.py --file samples/lj_paragraph.flac [--speed 2]  a recording, paced like live audio
       python scripts/live.py --list-devices
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator

import grpc
from rich.console import Console
from rich.logging import RichHandler

from transcriber_sdk import AsyncClient, TranscriberError, chunked, read_pcm16
from transcriber_sdk.cli import show_transcript

MIC_RATE = 16_000
CHUNK_S = 0.1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--file", help="play this recording as if it were the microphone")
    source.add_argument("--device", help="microphone: a sounddevice index or name (default: the system's)")
    source.add_argument("--list-devices", action="store_true", help="list the audio inputs and exit")
    parser.add_argument("--endpoints", default=None, help="comma-separated host:port or https:// URLs "
                                                          "(default: env TRANSCRIBER_ENDPOINTS, else 127.0.0.1:8080)")
    parser.add_argument("--language", default=None, help="language code (ru); several (ru,en): detected among them; "
                                                         "default: detect any")
    parser.add_argument("--switch-languages", action="store_true",
                        help="detect the language of each utterance afresh (speakers who switch)")
    parser.add_argument("--translate", action="store_true", help="write the speech in English (multilingual models)")
    parser.add_argument("--speed", type=float, default=1.0, help="with --file: play this many times faster")
    parser.add_argument("--wait-s", type=float, default=0.0, help="wait this long for the first endpoint to come up")
    args = parser.parse_args(argv)
    console = Console(highlight=False)
    logging.basicConfig(level=logging.WARNING, format="%(message)s",  # the SDK's failover notices
                        handlers=[RichHandler(console=console, show_time=False, show_path=False)])
    if args.list_devices:
        print(microphone().query_devices())
        return 0
    try:
        return asyncio.run(run(args, console))
    except KeyboardInterrupt:
        return 130


async def run(args: argparse.Namespace, console: Console) -> int:
    stop = asyncio.Event()  # Ctrl-C: end the audio, keep listening for the last finals
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    loop.add_signal_handler(signal.SIGINT, lambda: main_task.cancel() if stop.is_set() else stop.set())  # type: ignore[union-attr]
    async with AsyncClient(args.endpoints) as client:
        if args.wait_s and not await wait_until_ready(client.endpoints[0], args.wait_s):
            console.print(f"error: {client.endpoints[0]} did not come up within {args.wait_s:.0f} s", style="red")
            return 1
        if args.file:
            pcm, rate = read_pcm16(args.file)
            audio, what = played(pcm, rate, args.speed, stop), f"{args.file} ({len(pcm) / 2 / rate:.1f} s)"
        else:
            audio, rate, what = recorded(args.device, stop), MIC_RATE, "the microphone (Ctrl-C to stop)"
        console.print(f"[bold]Streaming[/bold] {what} to {', '.join(client.endpoints)}", style="cyan")
        started = time.monotonic()
        try:
            await show_transcript(client.stream(audio, rate, language=args.language, translate=args.translate,
                                                language_per_utterance=args.switch_languages), console)
        except TranscriberError as error:
            console.print(f"error: {error}", style="red")
            return 1
    console.print(f"[green]done[/green] in {time.monotonic() - started:.1f} s", style="cyan")
    return 0


async def played(pcm: bytes, rate: int, speed: float, stop: asyncio.Event) -> AsyncIterator[bytes]:
    """The recording in 100 ms chunks, no faster than `speed` times real time."""
    started = time.monotonic()
    for index, chunk in enumerate(chunked(pcm, rate, CHUNK_S)):
        if stop.is_set():
            return
        await asyncio.sleep(max(started + index * CHUNK_S / speed - time.monotonic(), 0))
        yield chunk


async def recorded(device: str | None, stop: asyncio.Event) -> AsyncIterator[bytes]:
    """16 kHz mono LINEAR16 from the microphone in 100 ms blocks, until `stop`."""
    sounddevice = microphone()
    loop = asyncio.get_running_loop()
    blocks: asyncio.Queue[bytes] = asyncio.Queue()

    def on_block(data: object, frames: int, timing: object, status: object) -> None:  # PortAudio's thread
        loop.call_soon_threadsafe(blocks.put_nowait, bytes(data))  # type: ignore[call-overload]

    chosen = int(device) if device is not None and device.isdigit() else device
    with sounddevice.RawInputStream(samplerate=MIC_RATE, channels=1, dtype="int16", device=chosen,
                                    blocksize=int(MIC_RATE * CHUNK_S), callback=on_block):
        while not stop.is_set():
            waiting = asyncio.ensure_future(blocks.get())
            stopping = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if waiting in done:
                yield waiting.result()
            else:
                waiting.cancel()


def microphone():  # type: ignore[no-untyped-def]
    """sounddevice, imported only for the microphone: it needs PortAudio, which --file does not."""
    try:
        import sounddevice
    except (ImportError, OSError) as error:
        sys.exit(f"error: the microphone needs sounddevice and PortAudio ({error}): pip install '.[mic]' "
                 "and e.g. apt install libportaudio2; or use --file")
    return sounddevice


async def wait_until_ready(endpoint: str, timeout_s: float) -> bool:
    """The server listens only once its model is loaded, so a ready channel means ready to transcribe."""
    if endpoint.startswith("https://"):
        return True
    async with grpc.aio.insecure_channel(endpoint) as channel:
        try:
            await asyncio.wait_for(channel.channel_ready(), timeout_s)
        except asyncio.TimeoutError:
            return False
    return True


if __name__ == "__main__":
    sys.exit(main())
