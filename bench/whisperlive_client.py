"""Streams PCM to a WhisperLive server (faster_whisper backend) and records when results arrive.

Protocol (whisper-live 0.10.0, read from whisper_live/client.py and server.py):

1. WebSocket connect; the first frame is a JSON text frame of options (what `Client.on_open`
   sends). The server answers {"uid", "message": "SERVER_READY", "backend"} once the client's
   model is ready, or {"uid", "status": "WAIT" | "ERROR", "message"} and closes.
2. Audio goes as binary frames of float32 samples, 16 kHz mono (per-connection
   "audio_format" may also say "int16"/"uint8"; the stock client sends float32).
3. The server sends {"uid", "segments": [...]} after each decode: the last
   `send_last_n_segments` completed segments plus the current interim one, each
   {"start": "1.230", "end": "...", "text", "completed": bool}; times are strings, seconds from
   the start of the audio. Completed segments never change once sent; the interim one is
   re-decoded (and re-sent) until it is either split off as completed by a later decode or
   promoted to completed after `same_output_threshold` identical decodes in a row.
4. The binary frame b"END_OF_AUDIO" ends the stream. The server then stops reading, cleans up
   the client and closes the socket at once: it does NOT decode buffered audio nor complete the
   interim segment (0.10.0's `StreamingTranscriptionClient.close` docstring says otherwise, but
   `TranscriptionServer.recv_audio` only runs an optional finalizer hook). So, like the stock
   file client (`wait_before_disconnect`), `stream_whisperlive` by default keeps the socket open
   after the last chunk until the server has settled, and only then sends END_OF_AUDIO.

The WebSocket side is the `websockets` package's asyncio client (>= 15 for its `proxy` option;
tested with 17.4), set up like the stock client's connection: no permessage-deflate, no keepalive
pings of its own (the server, websockets too, pings every 20 s; the library answers those by
itself), no message size limit.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.protocol import State

RATE = 16000  # WhisperLive's ServeClientBase.RATE; it does not resample
END_OF_AUDIO = b"END_OF_AUDIO"


class WhisperLiveError(RuntimeError):
    pass


# ------------------------------------------------------------------------------ WebSocket

async def _connect(host: str, port: int, timeout_s: float = 10.0) -> ClientConnection:
    try:
        return await connect(
            f"ws://{host}:{port}/",
            open_timeout=timeout_s,
            # Like the stock client (websocket-client): no compression, so neither side spends
            # CPU deflating float32 audio, and no pings of our own; the server's are answered.
            compression=None,
            ping_interval=None,
            close_timeout=2.0,  # how long close() waits for the server's close frame
            max_size=None,  # replies grow with send_last_n_segments; never cut them off
            proxy=None,  # a local benchmark server; never route through an environment proxy
        )
    except InvalidHandshake as exc:  # e.g. HTTP status other than 101, bad Sec-WebSocket-Accept
        raise WhisperLiveError(f"WebSocket upgrade refused: {exc}") from exc


def _is_open(ws: ClientConnection) -> bool:
    """False once either side has started closing (e.g. DISCONNECT after max_connection_time)."""
    return ws.state is State.OPEN


# ------------------------------------------------------------------------------ the run

class Segment(NamedTuple):
    start_s: float
    end_s: float
    text: str
    completed: bool


@dataclass(frozen=True)
class Arrival:
    at_s: float  # time.monotonic() when the message was read
    segments: list[Segment]


@dataclass
class WhisperLiveRun:
    t0: float  # time.monotonic() just before the first audio chunk was sent
    last_audio_at: float = math.nan  # when the last audio chunk was handed to the socket
    arrivals: list[Arrival] = field(default_factory=list)
    ready_at: float = math.nan  # SERVER_READY (model loaded; shared, so only the first client waits)
    end_sent_at: float = math.nan  # when END_OF_AUDIO went out
    closed_at: float = math.nan  # when the server's close came (nan: it never did, see end_reason)
    end_reason: str = ""  # "server_closed", "idle_timeout" or "connection_lost"
    other_messages: list[tuple[float, dict[str, Any]]] = field(default_factory=list)  # language, WARNING, ...


def _to_float32(pcm16: bytes) -> bytes:
    return (np.frombuffer(pcm16, dtype="<i2").astype(np.float32) / 32768.0).astype("<f4").tobytes()


def _parse_segments(raw: list[dict[str, Any]]) -> list[Segment]:
    return [Segment(float(s["start"]), float(s["end"]), str(s.get("text", "")), bool(s.get("completed", False)))
            for s in raw]


async def stream_whisperlive(
    port: int,
    pcm16: bytes,
    rate: int,
    *,
    language: str = "en",
    chunk_s: float = 0.1,
    realtime: bool = True,
    host: str = "127.0.0.1",
    model: str = "tiny.en",
    use_vad: bool = True,
    send_last_n_segments: int = 10,
    same_output_threshold: int = 10,
    settle: bool = True,
    settle_quiet_s: float = 15.0,
    settle_done_quiet_s: float = 2.0,
    max_settle_s: float = 120.0,
    end_timeout_s: float = 30.0,
    ready_timeout_s: float = 120.0,
) -> WhisperLiveRun:
    """Streams mono PCM16 at `rate` (must be 16 kHz) to WhisperLive and stamps every reply.

    Chunks go out on a monotonic schedule, chunk i at t0 + i * chunk_s (the same pacing as
    transcriber_sdk.chunked). After the last chunk, with `settle`, the socket stays open until
    the server is done with the tail: its latest message has no interim segment, reaches within
    1 s of the end of the audio and nothing came for `settle_done_quiet_s`; or nothing at all came
    for `settle_quiet_s` (15 s, what the stock client waits; longer if the server has been slower
    than that between messages), capped at `max_settle_s`. Then END_OF_AUDIO goes out and replies are
    collected until the server closes or `end_timeout_s` passes without a message.

    `model` is what the handshake names; a server started with a custom model path ignores it.
    The option defaults mirror whisper_live.client.Client."""
    if rate != RATE:
        raise ValueError(f"WhisperLive takes {RATE} Hz audio and does not resample; got {rate} Hz")
    audio = _to_float32(pcm16)
    step = max(1, round(rate * chunk_s)) * 4  # bytes of float32 per chunk
    uid = str(uuid.uuid4())
    ws = await _connect(host, port)
    run = WhisperLiveRun(t0=math.nan)
    try:
        await ws.send(json.dumps({  # the keys whisper_live.client.Client.on_open sends
            "uid": uid,
            "language": language,
            "task": "transcribe",
            "model": model,
            "use_vad": use_vad,
            "send_last_n_segments": send_last_n_segments,
            "no_speech_thresh": 0.45,
            "clip_audio": False,
            "same_output_threshold": same_output_threshold,
            "enable_translation": False,
            "target_language": "fr",
            "hotwords": None,
            "enable_diarization": False,
            "max_speakers": 10,
            "known_speakers": [],
            "word_timestamps": False,
            "initial_prompt": None,
            "vad_parameters": None,
        }))
        await _await_ready(ws, uid, run, ready_timeout_s)

        last_msg_at = [time.monotonic()]  # any message, repeats included
        reader = asyncio.create_task(_read_replies(ws, uid, run, last_msg_at))
        run.t0 = time.monotonic()
        for index, offset in enumerate(range(0, len(audio), step)):
            if realtime:
                delay = run.t0 + index * chunk_s - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            if not _is_open(ws):  # e.g. DISCONNECT after max_connection_time
                break
            try:
                await ws.send(audio[offset:offset + step])
            except ConnectionClosed:
                break
            run.last_audio_at = time.monotonic()

        if settle and _is_open(ws):
            audio_s = len(audio) / 4 / RATE
            await _settle(run, last_msg_at, ws, audio_s, settle_quiet_s, settle_done_quiet_s, max_settle_s)
        if _is_open(ws):
            try:
                await ws.send(END_OF_AUDIO)  # binary, as the stock client sends it
                run.end_sent_at = time.monotonic()
            except ConnectionClosed:
                pass
        # After END_OF_AUDIO the server closes; wait for that, but not forever.
        while not reader.done():
            since = last_msg_at[0] if math.isnan(run.end_sent_at) else max(last_msg_at[0], run.end_sent_at)
            quiet = time.monotonic() - since
            if quiet >= end_timeout_s:
                run.end_reason = "idle_timeout"
                break
            await asyncio.wait({reader}, timeout=min(0.5, end_timeout_s - quiet))
        if reader.done():
            reader.result()  # re-raise a reader failure
        else:
            reader.cancel()
    finally:
        await ws.close()
    if not run.end_reason:
        # server_closed: the server's close frame came; connection_lost: the TCP connection ended without one.
        run.end_reason = "server_closed" if ws.protocol.close_rcvd is not None else "connection_lost"
    return run


async def _await_ready(ws: ClientConnection, uid: str, run: WhisperLiveRun, timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                raw = await ws.recv()
            except ConnectionClosed as exc:
                raise WhisperLiveError("server closed the connection before SERVER_READY") from exc
            msg = json.loads(raw)
            if msg.get("uid") != uid:
                continue
            if msg.get("status") in ("WAIT", "ERROR"):  # WAIT: server full (max_clients)
                raise WhisperLiveError(f"server said {msg['status']}: {msg.get('message')}")
            if msg.get("message") == "SERVER_READY":
                run.ready_at = time.monotonic()
                return
            run.other_messages.append((time.monotonic(), msg))


async def _read_replies(ws: ClientConnection, uid: str, run: WhisperLiveRun, last_msg_at: list[float]) -> None:
    while True:
        try:
            raw = await ws.recv()
        except ConnectionClosed:  # the server's close, or the connection lost
            break
        at = time.monotonic()
        last_msg_at[0] = at
        if not isinstance(raw, str):
            continue
        msg = json.loads(raw)
        if msg.get("uid") != uid:
            continue
        if "segments" in msg:
            run.arrivals.append(Arrival(at, _parse_segments(msg["segments"])))
        else:  # language detection, WARNING/ERROR status, DISCONNECT (max_connection_time)
            run.other_messages.append((at, msg))
    run.closed_at = time.monotonic()


async def _settle(run: WhisperLiveRun, last_msg_at: list[float], ws: ClientConnection, audio_s: float,
                  quiet_s: float, done_quiet_s: float, max_s: float) -> None:
    """Waits until WhisperLive has finished the audio it has, before END_OF_AUDIO discards it.

    After the audio stops the server keeps re-decoding the tail, re-sending the same interim
    segment each time, and promotes it to completed after `same_output_threshold` repeats;
    it never decodes less than 1 s of audio, so once the completed segments reach within 1 s of
    the end it is done. A silent tail yields no message at all, hence the plain quiet-time
    fallback, stretched to 3x the longest gap seen so far so that a server busy with other
    clients (one shared model, one decode at a time) is not taken for a finished one."""
    deadline = time.monotonic() + max_s
    while _is_open(ws) and time.monotonic() < deadline:
        now = time.monotonic()
        stamps = [run.t0, *(a.at_s for a in run.arrivals)]
        longest_gap = max((b - a for a, b in itertools.pairwise(stamps)), default=0.0)
        quiet = now - last_msg_at[0]
        latest = run.arrivals[-1].segments if run.arrivals else []
        tail_done = bool(latest) and all(s.completed for s in latest) and latest[-1].end_s >= audio_s - 1.0
        if quiet >= max(quiet_s, 3 * longest_gap) or (tail_done and quiet >= done_quiet_s):
            return
        await asyncio.sleep(0.1)


# ------------------------------------------------------------------------- interpretation

class SeenSegment(NamedTuple):
    text: str
    at_s: float  # time.monotonic() of the first message that showed it (in this state)
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Timeline:
    final_text: str
    completed: list[SeenSegment]  # the completed segments kept in the transcript, when first seen completed
    interims: list[SeenSegment]  # each distinct interim text, when first seen
    tail_uncompleted: bool  # the final text ends with an interim segment the server never completed


def timeline(run: WhisperLiveRun) -> Timeline:
    """Turns the stamped messages into first-seen times and the final transcript.

    Each message repeats up to `send_last_n_segments` completed segments, so completed segments
    are keyed by their (start, end, text) and only the first sighting counts. The transcript
    follows the stock client (`Client.process_segments`): completed segments in start order,
    a completed segment kept only if it starts at or after the end of the one kept before it,
    then the latest interim segment if its text differs from the last kept one."""
    first_completed: dict[tuple[float, float, str], SeenSegment] = {}
    interims: list[SeenSegment] = []
    seen_interim: set[str] = set()
    for arrival in run.arrivals:
        for seg in arrival.segments:
            if seg.completed:
                key = (seg.start_s, seg.end_s, seg.text)
                if key not in first_completed:
                    first_completed[key] = SeenSegment(seg.text.strip(), arrival.at_s, seg.start_s, seg.end_s)
            else:
                text = seg.text.strip()
                if text and text not in seen_interim:
                    seen_interim.add(text)
                    interims.append(SeenSegment(text, arrival.at_s, seg.start_s, seg.end_s))

    kept: list[SeenSegment] = []
    for seen in sorted(first_completed.values(), key=lambda s: (s.start_s, s.at_s)):
        if not kept or seen.start_s >= kept[-1].end_s:
            kept.append(seen)
    texts = [s.text for s in kept if s.text]
    tail_uncompleted = False
    latest = run.arrivals[-1].segments if run.arrivals else []
    if latest and not latest[-1].completed:
        tail = latest[-1].text.strip()
        if tail and (not texts or tail.lower() != texts[-1].lower()):
            texts.append(tail)
            tail_uncompleted = True
    return Timeline(" ".join(texts), kept, interims, tail_uncompleted)
