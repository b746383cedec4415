"""WhisperLive (PyPI `whisper-live`) as a benchmark competitor: its own venv and server command.

Two halves:

* `ensure_venv()` / `server_command()` run in the benchmark's own interpreter and use only
  the standard library.
* Run as a script under the WhisperLive venv's python (`server_command()` does that), this
  file is the server launcher. The wheel ships no `run_server.py`, so `serve()` does what
  upstream's run_server.py does: set OMP_NUM_THREADS, then `TranscriptionServer().run(...)`
  with the faster_whisper backend and a custom model path (which turns on single-model mode).

Why no torch: whisper-live 0.10.0 lists torch, torchaudio, openvino*, optimum*, openai-whisper,
PyAudio, librosa, numba, nvidia-* and more as hard requirements, but its faster_whisper
WebSocket path only does `import torch` (server.py, backend/faster_whisper_backend.py,
vad.py) and calls `torch.cuda.is_available()` / `torch.cuda.get_device_capability()` to pick
the device. The real VAD it uses on this path is faster-whisper's Silero ONNX model
(onnxruntime); whisper_live.vad's torch-based detector is built only for the TensorRT backend.
So whisper-live goes in with --no-deps, the runtime set below goes in explicitly, and the
launcher puts a tiny stand-in `torch` module in sys.modules that answers those two calls.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

WHISPER_LIVE_VERSION = "0.10.0"  # newest on PyPI when written; 0.10.x is what the issue quotes

# Installed with --no-deps (see module docstring for why).
WHISPER_LIVE_SPEC = f"whisper-live=={WHISPER_LIVE_VERSION}"

# What the faster_whisper WebSocket server imports, pinned to the set verified to work.
# pip resolves their own dependencies (pydantic, starlette, anyio, huggingface_hub, ...).
RUNTIME_REQUIREMENTS: tuple[str, ...] = (
    "faster-whisper==1.2.0",  # whisper-live pins it; pulls ctranslate2, onnxruntime (Silero VAD), av, tqdm
    "ctranslate2==4.8.5",
    "onnxruntime==1.32.0",
    "av==18.1.0",  # faster_whisper.audio imports it at module load
    "tokenizers==0.20.3",  # whisper-live pins it
    "huggingface_hub==0.36.2",  # imported by the backend even for a local model dir
    "numpy==2.4.6",  # whisper-live wants >=1.26.4,<2.5
    "websockets==17.4",  # the server is websockets.sync.server
    "fastapi==0.165.0",  # whisper_live.server imports fastapi/uvicorn at top level even with REST off
    "uvicorn==0.54.0",
)

# Written last by ensure_venv(): a venv without it (or with another spec in it) is incomplete.
_MARKER = ".whisperlive-bench-ready"


def _spec_text() -> str:
    return "\n".join((WHISPER_LIVE_SPEC, *RUNTIME_REQUIREMENTS)) + "\n"


def venv_python(path: Path) -> Path:
    return Path(path) / "bin" / "python"


def ensure_venv(path: Path, *, quiet: bool = True) -> Path:
    """Creates (or repairs) the WhisperLive venv at `path`; returns its python.

    A venv is reused only if its marker file records exactly the current install set, so a
    half-finished install or a changed pin leads to a clean rebuild."""
    path = Path(path)
    python = venv_python(path)
    marker = path / _MARKER
    if python.exists() and marker.exists() and marker.read_text() == _spec_text():
        return python
    if path.exists():
        # Only ever wipe what is plainly a (broken) venv, never a mistyped folder.
        if not (path / "pyvenv.cfg").exists() and any(path.iterdir()):
            raise RuntimeError(f"{path} exists and is not a venv; refusing to replace it")
        shutil.rmtree(path)
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check"]
    if quiet:
        pip.append("-q")
    subprocess.run([*pip, *RUNTIME_REQUIREMENTS], check=True)
    # --no-deps keeps torch, PyAudio (needs portaudio headers), openvino, nvidia-* out. Last, so
    # pip's resolver does not list whisper-live's unmet (unneeded) requirements as errors.
    subprocess.run([*pip, "--no-deps", WHISPER_LIVE_SPEC], check=True)
    # Fail here rather than in the benchmark if the import set is short of something.
    subprocess.run([str(python), str(Path(__file__).resolve()), "check"], check=True)
    marker.write_text(_spec_text())
    return python


def server_command(python: Path, port: int, model_dir: str, threads: int, device: str, *,
                   max_clients: int = 64, max_connection_time_s: int = 6 * 3600,
                   host: str = "127.0.0.1") -> list[str]:
    """The command line that starts WhisperLive's WebSocket server (faster_whisper backend).

    `model_dir` is a CTranslate2 Whisper model folder; passing it as the custom model makes
    WhisperLive load it once and share it between all clients (single-model mode).
    `threads` becomes OMP_NUM_THREADS, which is what CTranslate2 uses on CPU since WhisperLive
    leaves `cpu_threads` at 0. The model loads lazily, when the first client connects."""
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', not {device!r}")
    return [
        str(python), str(Path(__file__).resolve()), "serve",
        "--host", host,
        "--port", str(port),
        "--model", str(model_dir),
        "--threads", str(threads),
        "--device", device,
        "--max-clients", str(max_clients),
        "--max-connection-time", str(max_connection_time_s),
    ]


# ---------------------------------------------------------------- launcher side (WhisperLive venv)

def _install_torch_stand_in(device: str) -> None:
    """Answers the only torch calls the faster_whisper path makes, so torch needn't be installed.

    WhisperLive picks the device with torch.cuda.is_available() (no option for it) and then the
    compute type: int8 on CPU; on CUDA float16 for compute capability >= 7, else float32."""
    import ctranslate2  # only in the WhisperLive venv

    if device == "cuda":
        if ctranslate2.get_cuda_device_count() < 1:
            raise SystemExit("device 'cuda' asked for, but CTranslate2 sees no CUDA device")
        # No torch to ask for the capability: float16 support stands in for "major >= 7".
        capability = (7, 0) if "float16" in ctranslate2.get_supported_compute_types("cuda") else (6, 0)
    else:
        capability = (0, 0)
    torch = types.ModuleType("torch")
    torch.cuda = types.SimpleNamespace(  # type: ignore[attr-defined]
        is_available=lambda: device == "cuda",
        get_device_capability=lambda *_args: capability,
    )
    sys.modules["torch"] = torch


def _import_server(device: str) -> Any:
    """whisper_live.server.TranscriptionServer, imported behind the torch stand-in."""
    _install_torch_stand_in(device)
    import whisper_live.backend.faster_whisper_backend  # noqa: F401  (the server imports it lazily; fail early)
    from whisper_live.server import TranscriptionServer
    return TranscriptionServer


def serve(args: argparse.Namespace) -> None:
    # Before anything loads OpenMP (numpy, ctranslate2): it reads the variable once.
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    server_cls = _import_server(args.device)
    server_cls().run(
        args.host,
        port=args.port,
        backend="faster_whisper",
        faster_whisper_custom_model_path=args.model,
        single_model=True,  # with a custom model path: one WhisperModel for every client
        max_clients=args.max_clients,
        max_connection_time=args.max_connection_time,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="import the server modules and exit")
    run = sub.add_parser("serve", help="run the WhisperLive WebSocket server")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, required=True)
    run.add_argument("--model", required=True, help="CTranslate2 Whisper model folder")
    run.add_argument("--threads", type=int, required=True, help="OMP_NUM_THREADS for CTranslate2")
    run.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    run.add_argument("--max-clients", type=int, default=64)
    run.add_argument("--max-connection-time", type=int, default=6 * 3600, help="seconds")
    args = parser.parse_args(argv)
    if args.command == "check":
        _import_server("cpu")
        print(f"whisper-live {WHISPER_LIVE_VERSION}: server imports OK")
    else:
        serve(args)


if __name__ == "__main__":
    main()
