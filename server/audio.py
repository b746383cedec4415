"""Audio framing: PCM16 bytes to 16 kHz float32, with the checks that protect the decoder.

`PcmDecoder` is one per stream: it carries an odd trailing byte into the next
chunk and resamples to 16 kHz with a streaming resampler, so chunk boundaries
never change the audio the model sees.
"""

from __future__ import annotations

import io

import numpy as np
import soxr

from .errors import InvalidRequest

MODEL_RATE = 16_000
MIN_RATE, MAX_RATE = 8_000, 48_000


def check_format(encoding_name: str, sample_rate_hz: int, channels: int) -> int:
    """Validates the audio format of a config and returns the effective sample rate.

    Raises:
        InvalidRequest: the encoding, rate or channel count is not supported.
    """
    if encoding_name not in ("AUDIO_ENCODING_UNSPECIFIED", "LINEAR16"):
        raise InvalidRequest(f"encoding must be LINEAR16 (16-bit little-endian PCM); got {encoding_name}")
    rate = sample_rate_hz or MODEL_RATE
    if not MIN_RATE <= rate <= MAX_RATE:
        raise InvalidRequest(f"sample_rate_hertz must be between {MIN_RATE} and {MAX_RATE}; got {sample_rate_hz}")
    if channels not in (0, 1):
        raise InvalidRequest(f"audio_channel_count must be 1 (mono); got {channels}: mix down to mono before sending")
    return rate


class PcmDecoder:
    """Turns a stream of LINEAR16 chunks at `sample_rate_hz` into 16 kHz float32 samples."""

    def __init__(self, sample_rate_hz: int, max_chunk_s: float) -> None:
        self._rate = sample_rate_hz
        self._max_chunk_s = max_chunk_s
        self._max_chunk_bytes = 2 * round(sample_rate_hz * max_chunk_s)
        self._carry = b""
        self._resampler = None if sample_rate_hz == MODEL_RATE else soxr.ResampleStream(
            sample_rate_hz, MODEL_RATE, 1, dtype="float32")

    def decode(self, chunk: bytes) -> np.ndarray:
        """Returns the new 16 kHz samples in `chunk` (possibly none).

        Raises:
            InvalidRequest: the chunk is larger than the limit.
        """
        if len(chunk) > self._max_chunk_bytes:
            raise InvalidRequest(
                f"audio chunk is {len(chunk) / (2 * self._rate):.2f} s ({len(chunk)} bytes); the limit is "
                f"{self._max_chunk_s:g} s ({self._max_chunk_bytes} bytes at {self._rate} Hz): "
                "send smaller chunks (100 ms, 3,200 bytes at 16 kHz, is a good size)")
        data = self._carry + chunk
        usable = len(data) - len(data) % 2
        self._carry = data[usable:]
        samples = pcm16_to_float32(data[:usable])
        return self._resample(samples, last=False)

    def flush(self) -> np.ndarray:
        """Returns what the resampler still holds at the end of the stream (a lone odd byte is dropped)."""
        return self._resample(np.zeros(0, dtype=np.float32), last=True)

    def _resample(self, samples: np.ndarray, last: bool) -> np.ndarray:
        if self._resampler is None:
            return samples
        return self._resampler.resample_chunk(samples, last=last)


def pcm16_to_float32(data: bytes) -> np.ndarray:
    """Little-endian signed 16-bit PCM to float32 in [-1, 1)."""
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def resample(samples: np.ndarray, rate_hz: int) -> np.ndarray:
    """Resamples a whole float32 recording to 16 kHz."""
    if rate_hz == MODEL_RATE:
        return samples
    return soxr.resample(samples, rate_hz, MODEL_RATE).astype(np.float32)


def decode_pcm(data: bytes, rate_hz: int) -> np.ndarray:
    """A whole LINEAR16 recording to 16 kHz float32 (a lone odd byte at the end is dropped)."""
    return resample(pcm16_to_float32(data[: len(data) - len(data) % 2]), rate_hz)


def decode_file(content: bytes) -> np.ndarray:
    """Decodes an encoded recording (WAV, FLAC, OGG, MP3, ...) to 16 kHz mono float32.

    Raises:
        InvalidRequest: the bytes are not a recording FFmpeg can decode.
    """
    from faster_whisper.audio import decode_audio  # PyAV; imported here to keep this module light

    try:
        return decode_audio(io.BytesIO(content), sampling_rate=MODEL_RATE)
    except Exception as error:  # PyAV raises many types for corrupt input
        raise InvalidRequest(
            f"could not decode the audio content ({type(error).__name__}: {error}); "
            "send WAV, FLAC, OGG or MP3 bytes, or raw LINEAR16 in `pcm` with a config") from error
