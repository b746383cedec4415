"""Builds the response messages of the wire contract from policy and engine objects."""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2, status_pb2

from transcriber_sdk.proto.transcriber.v1 import transcriber_pb2 as pb

from .engine import FileSegment
from .errors import ERROR_DOMAIN, TranscriberFault
from .policy import Update, Word
from .vad import VoiceEvent, VoiceEventType

INTERIM_STABILITY = 0.5  # LocalAgreement has not confirmed these words yet


def duration(seconds: float) -> Duration:
    value = Duration()
    value.FromNanoseconds(round(max(seconds, 0.0) * 1e9))
    return value


def word_info(word: Word) -> pb.WordInfo:
    return pb.WordInfo(word=word.text.strip(), start_offset=duration(word.start_s), end_offset=duration(word.end_s),
                       probability=word.probability)


def streaming_result(words: Sequence[Word], *, is_final: bool, language: str, with_words: bool) -> pb.StreamingResult:
    return pb.StreamingResult(
        transcript="".join(word.text for word in words).strip(),
        is_final=is_final,
        stability=1.0 if is_final else INTERIM_STABILITY,
        start_offset=duration(words[0].start_s),
        end_offset=duration(words[-1].end_s),
        words=[word_info(word) for word in words] if with_words else [],
        language_code=language,
        confidence=sum(word.probability for word in words) / len(words),
    )


def results(update: Update, *, interim: bool, language: str, with_words: bool) -> list[pb.StreamingResult]:
    """At most one final result, then at most one interim result."""
    found = []
    if update.final:
        found.append(streaming_result(update.final, is_final=True, language=language, with_words=with_words))
    if interim and update.interim:
        found.append(streaming_result(update.interim, is_final=False, language=language, with_words=with_words))
    return found


def speech_event(event: VoiceEvent) -> pb.SpeechEvent:
    kind = (pb.SpeechEvent.SPEECH_ACTIVITY_BEGIN if event.type is VoiceEventType.BEGIN
            else pb.SpeechEvent.SPEECH_ACTIVITY_END)
    return pb.SpeechEvent(type=kind, offset=duration(event.offset_s))


def error_status(fault: TranscriberFault) -> status_pb2.Status:
    """The google.rpc.Status of a fault: code, message, ErrorInfo with its reason, RetryInfo if any.

    The same status goes in band and into the call's trailers (grpc-status-details-bin)."""
    status = status_pb2.Status(code=fault.code.value[0], message=str(fault))
    status.details.add().Pack(error_details_pb2.ErrorInfo(reason=fault.reason, domain=ERROR_DOMAIN))
    if fault.retry_after_s is not None:
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromMilliseconds(round(fault.retry_after_s * 1000))
        status.details.add().Pack(retry)
    return status


def file_segment(segment: FileSegment) -> pb.Segment:
    return pb.Segment(text=segment.text, start_offset=duration(segment.start_s), end_offset=duration(segment.end_s),
                      words=[word_info(word) for word in segment.words])
