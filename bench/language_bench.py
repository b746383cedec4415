"""Language benchmark: how well and how fast the multilingual model streams each language, given or detected.

Run it from the repository root, after `scripts/setup.sh server,test,bench,multilingual`:

    python bench/language_bench.py                       # the whole multilingual set, real time, about 22 min
    python bench/language_bench.py --languages ru --speed 4

Each recording of ../shared/speech-multilingual is decoded offline by faster-whisper (same model, beam 5) with
its language given and with it detected, then streamed through `transcriber-server` one at a time, with the
language given and with none. Printed per language: WER (characters for ja and zh; whisper-normalizer's
BasicTextNormalizer) offline and streamed, given and detected; the items whose detected language was wrong;
after how much audio since speech began every update carried the language it ended with (the lock, as a
client sees it); final and first-interim lag (p50, p90) and server CPU seconds per audio second, detected.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import subprocess
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jiwer
import numpy as np
import psutil
import soundfile
from whisper_normalizer.basic import BasicTextNormalizer

import stream_bench as sb
from transcriber_sdk import Client, Word
from transcriber_server.engine import resolve_device
from transcriber_server.models import model_path

DEFAULT_SPEECH_DIR = Path(__file__).resolve().parents[2] / "shared" / "speech-multilingual"
UNSPACED = ("ja", "zh")
NORMALIZER = BasicTextNormalizer()


@dataclass(frozen=True)
class Decoded:
    text: str
    language: str
    words: tuple[Word, ...] = ()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--speech-dir", type=Path,
                        default=Path(os.environ.get("TRANSCRIBER_MULTILINGUAL_DIR", DEFAULT_SPEECH_DIR)))
    parser.add_argument("--languages", default="", help="comma-separated codes; default: every language of the set")
    parser.add_argument("--model", default="base")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--cpu-threads", type=int, default=2)
    parser.add_argument("--speed", type=float, default=1.0, help="times real time (lags are measured at 1)")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    return parser.parse_args(argv)


def error_rate(language: str, references: list[str], hypotheses: list[str]) -> float:
    """Percent: words, or characters (spaces aside) for languages written without spaces."""
    references, hypotheses = [NORMALIZER(text) for text in references], [NORMALIZER(text) for text in hypotheses]
    if language in UNSPACED:
        return 100 * jiwer.cer(["".join(text.split()) for text in references],
                               ["".join(text.split()) for text in hypotheses])
    return 100 * jiwer.wer(references, hypotheses)


def decode_offline(items: list[dict], args: argparse.Namespace) -> dict[tuple[str, str], Decoded]:
    """(id, "given" | "detected") -> the offline transcript. Runs before the server starts."""
    from faster_whisper import WhisperModel

    device, compute_type = resolve_device(args.device, "auto")
    model = WhisperModel(model_path(args.model), device=device, compute_type=compute_type, cpu_threads=args.cpu_threads)
    results = {}
    for item in items:
        audio, _ = soundfile.read(args.speech_dir / item["file"], dtype="float32")
        for mode, language in (("given", item["language"]), ("detected", None)):
            segments, info = model.transcribe(audio, beam_size=5, word_timestamps=True, vad_filter=True,
                                              language=language)
            segments = list(segments)
            results[item["id"], mode] = Decoded(
                text="".join(segment.text for segment in segments).strip(), language=info.language,
                words=tuple(Word(word.word.strip(), word.start, word.end, word.probability)
                            for segment in segments for word in segment.words or []))
    del model
    gc.collect()
    return results


def steady_after_s(run: sb.StreamRun, speech_start_s: float, speed: float) -> float:
    """Audio seconds since speech began at the first update from which on every update carried the language
    the stream ended with."""
    languages = [arrival.language for arrival in run.arrivals if arrival.language]
    if not languages:
        return float("nan")
    steady = len(languages)
    while steady > 0 and languages[steady - 1] == languages[-1]:
        steady -= 1
    arrival = [arrival for arrival in run.arrivals if arrival.language][steady]
    return (arrival.at_s - run.t0_s) * speed - speech_start_s


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    items = [json.loads(line) for line in (args.speech_dir / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
             if line.strip()]
    wanted = {code.strip() for code in args.languages.split(",") if code.strip()}
    items = [item for item in items if not wanted or item["language"] in wanted]
    offline = decode_offline(items, args)
    port = sb.free_port()
    flags = ["--port", str(port), "--model", args.model, "--device", args.device,
             "--cpu-threads", str(args.cpu_threads), "--log-level", "WARNING"]
    server = subprocess.Popen([sys.executable, "-m", "transcriber_server", *flags])
    rows: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    try:
        sb.wait_serving(server, port)
        process = psutil.Process(server.pid)
        with Client(endpoints=[f"127.0.0.1:{port}"]) as client:
            for item in items:
                row = rows[item["language"]]
                row["reference"].append(item["text"])
                row["audio_s"].append(item["duration_s"])
                for mode, language in (("given", item["language"]), ("detected", None)):
                    cpu_before_s = sb.cpu_s(process)
                    run = sb.stream_recording(client, args.speech_dir / item["file"], language, args.speed)
                    finals = [arrival for arrival in run.arrivals if arrival.is_final]
                    row[f"offline_{mode}"].append(offline[item["id"], mode].text)
                    row[f"stream_{mode}"].append(" ".join(final.text for final in finals))
                    if mode == "given":
                        continue
                    row["cpu_s"].append(sb.cpu_s(process) - cpu_before_s)
                    spoken = [word for word, key in zip(offline[item["id"], "given"].words,
                                                        sb.word_keys(offline[item["id"], "given"].words)) if key]
                    if args.speed == 1.0 and item["language"] not in UNSPACED:
                        row["final_lags"] += sb.final_lags(run, spoken)
                        row["interim_lags"] += sb.first_seen_lags(run, spoken)
                    speech_start_s = spoken[0].start_s if spoken else 0.0
                    row["steady_s"].append(steady_after_s(run, speech_start_s, args.speed))
                    languages = {final.language for final in finals}
                    if languages != {item["language"]}:
                        row["wrong"].append(f"{item['id']}: {sorted(languages)}")
                    if offline[item["id"], "detected"].language != item["language"]:
                        row["wrong_offline"].append(f"{item['id']}: {offline[item['id'], 'detected'].language}")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait()
    report = {language: figures(language, row, args.speed) for language, row in rows.items()}
    print_report(report, args)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def figures(language: str, row: dict[str, list], speed: float) -> dict:
    steady = [value for value in row["steady_s"] if value == value]
    final_p50, final_p90 = sb.percentiles(row["final_lags"])
    interim_p50, interim_p90 = sb.percentiles(row["interim_lags"])
    return {"items": len(row["reference"]), "audio_s": sum(row["audio_s"]),
            **{f"{kind}_{mode}": error_rate(language, row["reference"], row[f"{kind}_{mode}"])
               for kind in ("offline", "stream") for mode in ("given", "detected")},
            "wrong_detections": row["wrong"], "wrong_offline_detections": row["wrong_offline"],
            "steady_after_s_max": max(steady) if steady else float("nan"),
            "steady_after_s_median": float(np.median(steady)) if steady else float("nan"),
            "final_lag_p50_s": final_p50, "final_lag_p90_s": final_p90,
            "interim_lag_p50_s": interim_p50, "interim_lag_p90_s": interim_p90,
            "cpu_s_per_audio_s": sum(row["cpu_s"]) / sum(row["audio_s"]), "speed": speed}


def print_report(report: dict, args: argparse.Namespace) -> None:
    print(f"model {args.model}, {args.cpu_threads} CPU threads, streamed at {args.speed:g}x real time, one at a time; "
          "error rates in % (CER for ja, zh)")
    print(f"{'lang':<5}{'items':>6}{'audio s':>8}{'off/giv':>8}{'str/giv':>8}{'off/det':>8}{'str/det':>8}"
          f"{'steady s':>9}{'(max)':>7}{'final p50':>10}{'p90':>6}{'interim':>8}{'CPU/s':>7}  wrong detections")
    for language, row in sorted(report.items(), key=lambda pair: -pair[1]["audio_s"]):
        print(f"{language:<5}{row['items']:>6}{row['audio_s']:>8.0f}{row['offline_given']:>8.1f}{row['stream_given']:>8.1f}"
              f"{row['offline_detected']:>8.1f}{row['stream_detected']:>8.1f}{row['steady_after_s_median']:>9.1f}"
              f"{row['steady_after_s_max']:>7.1f}{row['final_lag_p50_s']:>10.2f}{row['final_lag_p90_s']:>6.2f}"
              f"{row['interim_lag_p50_s']:>8.2f}{row['cpu_s_per_audio_s']:>7.2f}  "
              f"stream: {row['wrong_detections'] or '-'}; offline: {row['wrong_offline_detections'] or '-'}")


if __name__ == "__main__":
    main()
