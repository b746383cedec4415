"""Text Whisper writes where nobody said it: subtitle credits, video outros and sound captions from its training data.

Whisper learned from subtitled video, so on noise, breath or the end of a window it may write the
credits of a subtitler ("Редактор субтитров А.Синецкая Корректор В.Сухиашвили", written by
Whisper base on 12 s of -25 dBFS noise with the language fixed to Russian), an outro ("Продолжение
следует...", OpenWhispr #1458) or a caption of a sound ("ТРЕВОЖНАЯ МУЗЫКА", on -30 dBFS noise).
The phrases are those the field reports (the issue of this project, faster-whisper #918, Vexa #617).
The voice-activity gate keeps most such audio from the model; this is the guard for what gets past
it. A whole sentence is dropped, never part of one: credits and captions wherever they appear, an
outro only when it is the whole sentence (someone who says "thank you for watching, see you" keeps it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .policy import Word

# Credits: nobody reads these aloud. Lower case; \W+ stands for any run of spaces and punctuation.
CREDITS = [re.compile(pattern) for pattern in (
    r"amara\W*org",
    r"dimatorzok",
    r"субтитр\w*\W+(сделал|создал|подготовил|делал|редактор)",
    r"редактор\W+субтитров",
    r"корректор\W+\w\.",
    r"untertitel(ung)?\W+(im\W+auftrag\W+)?(des|der|von)\W+(zdf|ard|wdr|ndr|swr|br|funk)",
    r"sous\W+titr\w*\W+réalisés?\W+par",
    r"subtítulos?\W+(realizados?|hechos?)\W+por",
    r"subtítulos?\W+por\W+la\W+comunidad",
    r"legendas?\W+pela\W+comunidade",
    r"legendado\W+por",
    r"字幕由",
    r"明镜与点点",
)]

# Outros: invented at the end of a window, but a speaker could say them, so only a whole sentence counts.
OUTROS = {
    "продолжение следует", "спасибо за просмотр", "спасибо за внимание", "подписывайтесь на канал",
    "thank you for watching", "thanks for watching", "please subscribe", "see you in the next video",
    "vielen dank fürs zuschauen", "vielen dank für's zuschauen", "danke fürs zuschauen", "bis zum nächsten mal",
    "merci d'avoir regardé", "merci d'avoir regardé cette vidéo", "abonnez-vous",
    "gracias por ver", "gracias por ver el video", "gracias por ver el vídeo", "suscríbete",
    "obrigado por assistir", "obrigada por assistir", "inscreva-se no canal",
    "ご視聴ありがとうございました", "次の動画でお会いしましょう",
}

# A caption names a sound in capitals (ТРЕВОЖНАЯ МУЗЫКА) or in brackets ([Music], (смех), *applause*, ♪).
SOUNDS = re.compile(r"музык|смех|аплодисмент|music|applause|laugh|musik|lachen|applaus|musique|rires|música|risas|"
                    r"aplausos|risos")
BRACKETED = re.compile(r"^\W*([\[(*♪♫].*[\])*♪♫])\W*$")
INITIAL = re.compile(r"^\w\.$")  # "А." of "А. Егорова" ends no sentence
SENTENCE_END = (".", "!", "?", "…", "。", "！", "？")


def without_invented(words: Sequence[Word]) -> list[Word]:
    """`words` less each sentence that is a credit, an outro or a caption of a sound."""
    kept: list[Word] = []
    for sentence in _sentences(words):
        if not is_invented("".join(word.text for word in sentence)):
            kept.extend(sentence)
    return kept


def is_invented(sentence: str) -> bool:
    text = sentence.strip()
    lowered = text.lower()
    if any(pattern.search(lowered) for pattern in CREDITS):
        return True
    if _bare(lowered) in OUTROS:
        return True
    if BRACKETED.match(text):
        return True
    letters = [char for char in text if char.isalpha()]
    return bool(letters) and all(char.isupper() for char in letters) and len(letters) > 1 and \
        bool(SOUNDS.search(lowered))


def _bare(text: str) -> str:
    """Lower-case words, single-spaced, without the punctuation around them (an apostrophe inside stays)."""
    words = (word.strip(".,!?…:;\"'«»“”()[]-。！？、") for word in text.split())
    return " ".join(word for word in words if word)


def _sentences(words: Sequence[Word]) -> list[list[Word]]:
    sentences: list[list[Word]] = [[]]
    for word in words:
        sentences[-1].append(word)
        text = word.text.strip().rstrip("\"'”»)")
        if text.endswith(SENTENCE_END) and not INITIAL.match(text):
            sentences.append([])
    return [sentence for sentence in sentences if sentence]
