"""What one decode step costs: window length x batch size x encoder input, split into its stages.

    .venv/bin/python bench/step_cost.py                       # tiny.en int8 on the CPU, 1 thread
    .venv/bin/python bench/step_cost.py --device cuda --model large-v3-turbo --batches 1,8,16

Windows are cut from the long LJ Speech recording (speech all the way through, with a 200-character
prompt, as a stream mid-sentence has). Printed per row: wall time of the batch, per window, CPU time per
window, and the time in feature extraction, encode, generate and align; first with the encoder fed 30 s
(faster-whisper's way), then with the window plus padding (the server's default), then with the
committed words given as a prefix (what the server does once words are final).
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from collections.abc import Sequence

import soundfile

from transcriber_server.batch_decode import BatchDecoder, WindowJob
from transcriber_server.engine import resolve_device
from transcriber_server.models import EMBEDDED_MODEL, model_path
from transcriber_server.settings import ServerSettings

RECORDING = "audio/ljspeech_LJ001-0001_0032_long.flac"
PROMPT = ("printing in the only sense with which we are at present concerned differs from most if not from all "
          "the arts and crafts represented in the exhibition in being comparatively modern")


class Timed:
    """The model's CTranslate2 object, timing the calls the decoder makes."""

    def __init__(self, inner, totals: dict[str, float]) -> None:  # type: ignore[no-untyped-def]
        self._inner, self._totals = inner, totals

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        attribute = getattr(self._inner, name)
        if name not in ("encode", "generate", "align"):
            return attribute

        def timed(*args, **kwargs):  # type: ignore[no-untyped-def]
            started = time.perf_counter()
            try:
                return attribute(*args, **kwargs)
            finally:
                self._totals[name] += time.perf_counter() - started
        return timed


def main(argv: Sequence[str] | None = None) -> None:
    from faster_whisper import WhisperModel

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--speech-dir", default=os.environ.get("TRANSCRIBER_SPEECH_DIR", "../shared/speech"))
    parser.add_argument("--model", default=EMBEDDED_MODEL)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--cpu-threads", type=int, default=1)
    parser.add_argument("--windows", default="2,5,10,20,30", help="window lengths in seconds")
    parser.add_argument("--batches", default="1,4,8")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    device, compute_type = resolve_device(args.device, "auto")
    model = WhisperModel(model_path(args.model), device=device,
                         compute_type=compute_type, cpu_threads=args.cpu_threads)
    totals: dict[str, float] = defaultdict(float)
    model.model = Timed(model.model, totals)
    audio, _ = soundfile.read(os.path.join(args.speech_dir, RECORDING), dtype="float32")
    defaults = ServerSettings()
    decoders = {"encoder 30 s": BatchDecoder(model, beam_size=defaults.beam_size, encoder_pad_s=None),
                "encoder fitted": BatchDecoder(model, beam_size=defaults.beam_size, encoder_pad_s=defaults.encoder_pad_s,
                                               encoder_min_s=defaults.encoder_min_s)}
    print(f"{args.model} on {device} ({compute_type}), {args.cpu_threads} CPU threads, beam {defaults.beam_size}")
    print(f"{'encoder':<16}{'prefix':>8}{'window s':>9}{'batch':>6}{'wall ms':>9}{'ms/win':>8}{'CPU ms/win':>11}"
          f"{'encode':>8}{'generate':>9}{'align':>7}")
    for name, decoder in decoders.items():
        for prefixed in ((False, True) if name == "encoder fitted" else (False,)):
            for length_s in [float(value) for value in args.windows.split(",")]:
                for batch in [int(value) for value in args.batches.split(",")]:
                    jobs = [_job(audio, index, length_s, prefixed, decoder) for index in range(batch)]
                    decoder.decode(jobs)  # warm up this shape
                    totals.clear()
                    wall, cpu = time.perf_counter(), time.process_time()
                    for _ in range(args.repeats):
                        decoder.decode(jobs)
                    wall_ms = (time.perf_counter() - wall) / args.repeats * 1000
                    cpu_ms = (time.process_time() - cpu) / args.repeats * 1000
                    stages = {stage: totals[stage] / args.repeats * 1000 for stage in ("encode", "generate", "align")}
                    print(f"{name:<16}{'yes' if prefixed else 'no':>8}{length_s:>9g}{batch:>6}{wall_ms:>9.0f}"
                          f"{wall_ms / batch:>8.0f}{cpu_ms / batch:>11.0f}{stages['encode']:>8.0f}"
                          f"{stages['generate']:>9.0f}{stages['align']:>7.0f}", flush=True)


def _job(audio, index: int, length_s: float, prefixed: bool, decoder: BatchDecoder) -> WindowJob:  # type: ignore[no-untyped-def]
    """Window `index` (each from another place in the recording); with `prefixed`, its first half's words as the prefix."""
    start = (index * 7 + 3) * 16_000
    window = audio[start:start + int(length_s * 16_000)]
    prefix = ""
    if prefixed:
        half = window[: window.size // 2]
        prefix = "".join(word.text for word in decoder.decode([WindowJob(half, "en")])[0].words[:-1]).strip()
    return WindowJob(window, "en", prompt=PROMPT, prefix=prefix)


if __name__ == "__main__":
    main()
