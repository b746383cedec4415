import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AudioEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIO_ENCODING_UNSPECIFIED: _ClassVar[AudioEncoding]
    LINEAR16: _ClassVar[AudioEncoding]

class Task(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_UNSPECIFIED: _ClassVar[Task]
    TRANSCRIBE: _ClassVar[Task]
    TRANSLATE: _ClassVar[Task]
AUDIO_ENCODING_UNSPECIFIED: AudioEncoding
LINEAR16: AudioEncoding
TASK_UNSPECIFIED: Task
TRANSCRIBE: Task
TRANSLATE: Task

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServerStatus(_message.Message):
    __slots__ = ("model", "active_streams", "max_streams", "draining", "load", "queued_windows", "mean_batch_size", "busy_ratio", "final_lag_p90_s")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_STREAMS_FIELD_NUMBER: _ClassVar[int]
    MAX_STREAMS_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    QUEUED_WINDOWS_FIELD_NUMBER: _ClassVar[int]
    MEAN_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    BUSY_RATIO_FIELD_NUMBER: _ClassVar[int]
    FINAL_LAG_P90_S_FIELD_NUMBER: _ClassVar[int]
    model: str
    active_streams: int
    max_streams: int
    draining: bool
    load: float
    queued_windows: int
    mean_batch_size: float
    busy_ratio: float
    final_lag_p90_s: float
    def __init__(self, model: _Optional[str] = ..., active_streams: _Optional[int] = ..., max_streams: _Optional[int] = ..., draining: _Optional[bool] = ..., load: _Optional[float] = ..., queued_windows: _Optional[int] = ..., mean_batch_size: _Optional[float] = ..., busy_ratio: _Optional[float] = ..., final_lag_p90_s: _Optional[float] = ...) -> None: ...

class StreamingConfig(_message.Message):
    __slots__ = ("encoding", "sample_rate_hertz", "audio_channel_count", "language_code", "interim_results", "enable_word_time_offsets", "enable_voice_activity_events", "prompt", "hotwords", "stream_id", "model", "alternative_language_codes", "task", "language_per_utterance")
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HERTZ_FIELD_NUMBER: _ClassVar[int]
    AUDIO_CHANNEL_COUNT_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_CODE_FIELD_NUMBER: _ClassVar[int]
    INTERIM_RESULTS_FIELD_NUMBER: _ClassVar[int]
    ENABLE_WORD_TIME_OFFSETS_FIELD_NUMBER: _ClassVar[int]
    ENABLE_VOICE_ACTIVITY_EVENTS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    HOTWORDS_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ALTERNATIVE_LANGUAGE_CODES_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_PER_UTTERANCE_FIELD_NUMBER: _ClassVar[int]
    encoding: AudioEncoding
    sample_rate_hertz: int
    audio_channel_count: int
    language_code: str
    interim_results: bool
    enable_word_time_offsets: bool
    enable_voice_activity_events: bool
    prompt: str
    hotwords: str
    stream_id: str
    model: str
    alternative_language_codes: _containers.RepeatedScalarFieldContainer[str]
    task: Task
    language_per_utterance: bool
    def __init__(self, encoding: _Optional[_Union[AudioEncoding, str]] = ..., sample_rate_hertz: _Optional[int] = ..., audio_channel_count: _Optional[int] = ..., language_code: _Optional[str] = ..., interim_results: _Optional[bool] = ..., enable_word_time_offsets: _Optional[bool] = ..., enable_voice_activity_events: _Optional[bool] = ..., prompt: _Optional[str] = ..., hotwords: _Optional[str] = ..., stream_id: _Optional[str] = ..., model: _Optional[str] = ..., alternative_language_codes: _Optional[_Iterable[str]] = ..., task: _Optional[_Union[Task, str]] = ..., language_per_utterance: _Optional[bool] = ...) -> None: ...

class StreamingTranscribeRequest(_message.Message):
    __slots__ = ("config", "audio", "control")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    config: StreamingConfig
    audio: bytes
    control: Control
    def __init__(self, config: _Optional[_Union[StreamingConfig, _Mapping]] = ..., audio: _Optional[bytes] = ..., control: _Optional[_Union[Control, _Mapping]] = ...) -> None: ...

class Control(_message.Message):
    __slots__ = ("action",)
    class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ACTION_UNSPECIFIED: _ClassVar[Control.Action]
        FINALIZE: _ClassVar[Control.Action]
    ACTION_UNSPECIFIED: Control.Action
    FINALIZE: Control.Action
    ACTION_FIELD_NUMBER: _ClassVar[int]
    action: Control.Action
    def __init__(self, action: _Optional[_Union[Control.Action, str]] = ...) -> None: ...

class WordInfo(_message.Message):
    __slots__ = ("word", "start_offset", "end_offset", "probability")
    WORD_FIELD_NUMBER: _ClassVar[int]
    START_OFFSET_FIELD_NUMBER: _ClassVar[int]
    END_OFFSET_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    word: str
    start_offset: _duration_pb2.Duration
    end_offset: _duration_pb2.Duration
    probability: float
    def __init__(self, word: _Optional[str] = ..., start_offset: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., end_offset: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., probability: _Optional[float] = ...) -> None: ...

class StreamingResult(_message.Message):
    __slots__ = ("transcript", "is_final", "stability", "start_offset", "end_offset", "words", "language_code", "confidence")
    TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    IS_FINAL_FIELD_NUMBER: _ClassVar[int]
    STABILITY_FIELD_NUMBER: _ClassVar[int]
    START_OFFSET_FIELD_NUMBER: _ClassVar[int]
    END_OFFSET_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_CODE_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    transcript: str
    is_final: bool
    stability: float
    start_offset: _duration_pb2.Duration
    end_offset: _duration_pb2.Duration
    words: _containers.RepeatedCompositeFieldContainer[WordInfo]
    language_code: str
    confidence: float
    def __init__(self, transcript: _Optional[str] = ..., is_final: _Optional[bool] = ..., stability: _Optional[float] = ..., start_offset: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., end_offset: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., words: _Optional[_Iterable[_Union[WordInfo, _Mapping]]] = ..., language_code: _Optional[str] = ..., confidence: _Optional[float] = ...) -> None: ...

class SpeechEvent(_message.Message):
    __slots__ = ("type", "offset")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        TYPE_UNSPECIFIED: _ClassVar[SpeechEvent.Type]
        SPEECH_ACTIVITY_BEGIN: _ClassVar[SpeechEvent.Type]
        SPEECH_ACTIVITY_END: _ClassVar[SpeechEvent.Type]
    TYPE_UNSPECIFIED: SpeechEvent.Type
    SPEECH_ACTIVITY_BEGIN: SpeechEvent.Type
    SPEECH_ACTIVITY_END: SpeechEvent.Type
    TYPE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    type: SpeechEvent.Type
    offset: _duration_pb2.Duration
    def __init__(self, type: _Optional[_Union[SpeechEvent.Type, str]] = ..., offset: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class StreamingTranscribeResponse(_message.Message):
    __slots__ = ("results", "speech_event", "error", "stream_id", "audio_processed", "model", "server_status", "settled_offset")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    SPEECH_EVENT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    AUDIO_PROCESSED_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SERVER_STATUS_FIELD_NUMBER: _ClassVar[int]
    SETTLED_OFFSET_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[StreamingResult]
    speech_event: SpeechEvent
    error: _status_pb2.Status
    stream_id: str
    audio_processed: _duration_pb2.Duration
    model: str
    server_status: ServerStatus
    settled_offset: _duration_pb2.Duration
    def __init__(self, results: _Optional[_Iterable[_Union[StreamingResult, _Mapping]]] = ..., speech_event: _Optional[_Union[SpeechEvent, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., stream_id: _Optional[str] = ..., audio_processed: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., model: _Optional[str] = ..., server_status: _Optional[_Union[ServerStatus, _Mapping]] = ..., settled_offset: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class TranscribeRequest(_message.Message):
    __slots__ = ("content", "pcm", "config")
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    PCM_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    content: bytes
    pcm: bytes
    config: StreamingConfig
    def __init__(self, content: _Optional[bytes] = ..., pcm: _Optional[bytes] = ..., config: _Optional[_Union[StreamingConfig, _Mapping]] = ...) -> None: ...

class Segment(_message.Message):
    __slots__ = ("text", "start_offset", "end_offset", "words")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    START_OFFSET_FIELD_NUMBER: _ClassVar[int]
    END_OFFSET_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    text: str
    start_offset: _duration_pb2.Duration
    end_offset: _duration_pb2.Duration
    words: _containers.RepeatedCompositeFieldContainer[WordInfo]
    def __init__(self, text: _Optional[str] = ..., start_offset: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., end_offset: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., words: _Optional[_Iterable[_Union[WordInfo, _Mapping]]] = ...) -> None: ...

class TranscribeResponse(_message.Message):
    __slots__ = ("transcript", "segments", "language_code", "audio_duration", "model", "server_status")
    TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_CODE_FIELD_NUMBER: _ClassVar[int]
    AUDIO_DURATION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SERVER_STATUS_FIELD_NUMBER: _ClassVar[int]
    transcript: str
    segments: _containers.RepeatedCompositeFieldContainer[Segment]
    language_code: str
    audio_duration: _duration_pb2.Duration
    model: str
    server_status: ServerStatus
    def __init__(self, transcript: _Optional[str] = ..., segments: _Optional[_Iterable[_Union[Segment, _Mapping]]] = ..., language_code: _Optional[str] = ..., audio_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., model: _Optional[str] = ..., server_status: _Optional[_Union[ServerStatus, _Mapping]] = ...) -> None: ...
