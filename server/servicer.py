"""TranscriberServicer: the only module that sees the gRPC context.

It admits calls, hands them to a StreamSession or the engine, and turns our
errors into a status, sent in band first (grpc/grpc#36066), then as the call's status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable

import grpc
from grpc_status import rpc_status

from transcriber_sdk.proto.transcriber.v1 import transcriber_pb2 as pb
from transcriber_sdk.proto.transcriber.v1 import transcriber_pb2_grpc as pb_grpc

from . import messages
from .admission import Admission
from .capacity import CapacityLimits, LagTracker, refusal
from .audio import decode_file, decode_pcm
from .engine import DecodeOptions, Engine
from .errors import ClientNotReading, IdleTimeout, InvalidRequest, ServerBug, TranscriberFault
from .scheduler import Load
from .session import StreamSession, check_model, config_rate, language_request, read_config
from .settings import ServerSettings

log = logging.getLogger(__name__)
IN_BAND_ERROR_WAIT_S = 1.0  # how long the in-band error may wait for the client to read it


class TranscriberServicer(pb_grpc.TranscriberServicer):
    def __init__(self, settings: ServerSettings, engine: Engine) -> None:
        self._settings = settings
        self._engine = engine
        self.lags = LagTracker()
        self._limits = CapacityLimits(max_lag_s=settings.admit_max_lag_s, max_cycle_s=settings.admit_max_cycle_s)
        self.admission = Admission(settings.max_streams, self._refusal)
        self._sessions: set[StreamSession] = set()
        self.on_error: Callable[[str], None] = lambda reason: None  # metrics hook: a call ended with this reason

    def begin_drain(self) -> None:
        """Refuse new calls with UNAVAILABLE; calls in flight go on."""
        self.admission.draining = True

    def stop_sessions(self) -> None:
        """Ask every stream in flight to settle what it has and end with UNAVAILABLE."""
        for session in list(self._sessions):
            session.stop()

    async def StreamingTranscribe(self, request_iterator: AsyncIterator[pb.StreamingTranscribeRequest],
                                  context: grpc.aio.ServicerContext) -> None:
        stream_id = ""
        try:
            async with self.admission.slot():
                config = await self._read_config(request_iterator)
                stream_id = config.stream_id
                session = StreamSession(config, self._engine, self._settings, self.lags)
                log.info("stream %r opened from %s (%s)", stream_id, context.peer(), self.admission)
                self._sessions.add(session)
                try:
                    # aclosing: a client that goes away while we write still stops the session now.
                    async with contextlib.aclosing(session.run(request_iterator)) as responses:
                        async for response in responses:
                            if response.model:  # the first response, sent on admission: report our load
                                response.server_status.CopyFrom(self.status())
                            await self._write(context, response)
                finally:
                    self._sessions.discard(session)
        except TranscriberFault as fault:
            await self._end_stream(context, fault, stream_id)
        except asyncio.CancelledError:
            log.info("stream %r cancelled by the client", stream_id)
            raise
        except Exception:
            log.exception("stream %r from %s failed", stream_id, context.peer())
            await self._end_stream(context, ServerBug("internal error; the server logged it"), stream_id)

    async def _read_config(self, requests: AsyncIterator[pb.StreamingTranscribeRequest]) -> pb.StreamingConfig:
        """The config, within the idle timeout: a call that sends nothing must not hold a slot."""
        timeout_s = self._settings.idle_timeout_s
        try:
            return await asyncio.wait_for(read_config(requests), timeout_s)
        except TimeoutError:
            raise IdleTimeout(f"no config within {timeout_s:g} s (idle timeout): send the config as the first "
                              "message as soon as the stream opens") from None

    async def _write(self, context: grpc.aio.ServicerContext, response: pb.StreamingTranscribeResponse) -> None:
        """Sends a response, or gives up on a client that has not read one for the stall timeout
        (gRPC flow control would otherwise hold the stream and its memory for as long as the client lives)."""
        try:
            await asyncio.wait_for(context.write(response), self._settings.stall_timeout_s)
        except TimeoutError:
            raise ClientNotReading(
                f"the client has not read a response for {self._settings.stall_timeout_s:g} s (stall timeout): "
                "read responses while sending audio") from None
        except grpc.aio.InternalError as error:  # ExecuteBatchError: the client cancelled or went away mid-write
            raise asyncio.CancelledError(f"the client went away ({error})") from error

    async def _end_stream(self, context: grpc.aio.ServicerContext, fault: TranscriberFault, stream_id: str) -> None:
        """Ends the call with the fault's status: in band first (grpc/grpc#36066), then as the call's
        status with the same details in the trailers."""
        self.on_error(fault.reason)
        status = messages.error_status(fault)
        # After a write timed out, another write would keep the trailers from ever being sent (measured).
        if not isinstance(fault, ClientNotReading):
            try:
                await asyncio.wait_for(
                    context.write(pb.StreamingTranscribeResponse(error=status, stream_id=stream_id)), IN_BAND_ERROR_WAIT_S)
            except (TimeoutError, grpc.aio.InternalError):
                pass  # a client that does not read still gets the trailers; one that went away, nothing
        await context.abort_with_status(rpc_status.to_status(status))

    async def GetStatus(self, request: pb.GetStatusRequest, context: grpc.aio.ServicerContext) -> pb.ServerStatus:
        return self.status()

    def _refusal(self) -> str | None:
        return refusal(self._engine.load(), self.lags.p90(time.monotonic()), self._limits)

    def engine_load(self) -> Load:
        return self._engine.load()

    def status(self) -> pb.ServerStatus:
        load = self._engine.load()
        lag_p90_s = self.lags.p90(time.monotonic())
        lag_p90_s = 0.0 if math.isnan(lag_p90_s) else lag_p90_s
        busy = max(self.admission.active / self.admission.max_streams, lag_p90_s / self._limits.max_lag_s,
                   load.cycle_s / self._limits.max_cycle_s)
        return pb.ServerStatus(model=self._engine.model_name, active_streams=self.admission.active,
                               max_streams=self.admission.max_streams, draining=self.admission.draining,
                               load=min(busy, 1.0), queued_windows=load.queued, mean_batch_size=load.mean_batch,
                               busy_ratio=load.busy_ratio, final_lag_p90_s=lag_p90_s)

    async def Transcribe(self, request: pb.TranscribeRequest, context: grpc.aio.ServicerContext) -> pb.TranscribeResponse:
        try:
            async with self.admission.slot():
                status = self.status()
                response = await self._transcribe(request)
                response.server_status.CopyFrom(status)
                return response
        except TranscriberFault as fault:
            self.on_error(fault.reason)
            await context.abort_with_status(rpc_status.to_status(messages.error_status(fault)))
        except Exception:
            log.exception("Transcribe from %s failed", context.peer())
            fault = ServerBug("internal error; the server logged it")
            self.on_error(fault.reason)
            await context.abort_with_status(rpc_status.to_status(messages.error_status(fault)))
        raise AssertionError("unreachable: abort raises")

    async def _transcribe(self, request: pb.TranscribeRequest) -> pb.TranscribeResponse:
        config = request.config
        check_model(config, self._engine)
        languages = language_request(config, self._engine)
        task = self._engine.check_task(config.task == pb.TRANSLATE)
        source = request.WhichOneof("audio_source")
        data = request.content if source == "content" else request.pcm
        if not data:
            raise InvalidRequest("no audio: set `content` (an encoded file) or `pcm` (raw LINEAR16 with a config)")
        if len(data) > self._settings.max_file_bytes:
            raise InvalidRequest(f"audio is {len(data)} bytes; Transcribe takes at most {self._settings.max_file_bytes} "
                                 "bytes: split the file or stream it with StreamingTranscribe")
        if source == "content":
            audio = await asyncio.to_thread(decode_file, data)
        else:
            audio = await asyncio.to_thread(decode_pcm, data, config_rate(config))
        segments, detected = await self._engine.transcribe_file(
            audio, DecodeOptions(language=languages.fixed, prompt=config.prompt, hotwords=config.hotwords,
                                 candidates=languages.candidates, task=task))
        return pb.TranscribeResponse(
            transcript=" ".join(segment.text for segment in segments),
            segments=[messages.file_segment(segment) for segment in segments],
            language_code=detected, audio_duration=messages.duration(audio.size / 16_000),
            model=self._engine.model_name)
