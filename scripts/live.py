"""Stream a recording (paced like a microphone) to a transcriber server and show the text as it settles.

Final text is printed normally; the interim tail is shown in grey and rewritten in place.

Usage: python scripts/live.py --file samples/lj_paragraph.flac [--endpoints 127.0.0.1:8080] [--fast]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import grpc
from rich.console import Console
from rich.live import Live
from rich.text import Text

from transcriber_sdk import Client, TranscriberError, chunked, read_pcm16


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", required=True, help="a recording to play as if it were the microphone")
    parser.add_argument("--endpoints", default=os.environ.get("TRANSCRIBER_ENDPOINTS", "127.0.0.1:8080"),
                        help="comma-separated host:port list (env TRANSCRIBER_ENDPOINTS)")
    parser.add_argument("--language", default=None, help="language code; default: detect")
    parser.add_argument("--fast", action="store_true", help="send the audio as fast as possible, not in real time")
    parser.add_argument("--wait-s", type=float, default=0.0, help="wait this long for the first endpoint to come up")
    args = parser.parse_args(argv)

    console = Console(highlight=False)
    if args.wait_s and not wait_until_ready(args.endpoints.split(",")[0], args.wait_s):
        console.print(f"error: {args.endpoints} did not come up within {args.wait_s:.0f} s", style="red")
        return 1
    pcm, rate = read_pcm16(args.file)
    console.print(f"[bold]Streaming[/bold] {args.file} ({len(pcm) / 2 / rate:.1f} s) to {args.endpoints}", style="cyan")
    finals: list[str] = []
    started = time.monotonic()
    try:
        with Client(endpoints=args.endpoints.split(",")) as client, \
                Live(Text(), console=console, auto_refresh=False, transient=False) as live:
            for update in client.stream(chunked(pcm, rate, realtime=not args.fast), sample_rate=rate,
                                        language=args.language):
                view = Text()
                if update.is_final:
                    finals.append(update.text)
                    view.append(" ".join(finals))
                else:
                    view.append(" ".join(finals))
                    view.append((" " if finals else "") + update.text, style="grey50")
                live.update(view, refresh=True)
            live.update(Text(" ".join(finals)), refresh=True)
    except TranscriberError as error:
        console.print(f"error: {error}", style="red")
        return 1
    console.print()
    console.print(f"[green]done[/green] in {time.monotonic() - started:.1f} s", style="cyan")
    return 0


def wait_until_ready(endpoint: str, timeout_s: float) -> bool:
    """The server listens only once its model is loaded, so a ready channel means ready to transcribe."""
    with grpc.insecure_channel(endpoint) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout_s)
        except grpc.FutureTimeoutError:
            return False
    return True


if __name__ == "__main__":
    sys.exit(main())
