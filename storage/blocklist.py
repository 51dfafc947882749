"""Blocked words and phrases: case-insensitive, whole words, unicode-aware; the one normalisation
(NFKC, casefold, invisible marks dropped), used by the stores to keep phrases and by `/imagine` to
match prompts.

A phrase matches where it appears with no letter, digit or underscore (in any script) right before
or after it; spaces inside a phrase match any run of whitespace. Phrases are data: they are
escaped before they become a pattern, and stored by the store as parameters, never as SQL.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

MAX_PHRASE_LENGTH = 100
_INVISIBLE = dict.fromkeys(
    (0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF, 0x00AD, 0x200E, 0x200F, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E)
)


def normalize(text: str) -> str:
    """Fold case and compatibility forms, drop zero-width and direction marks (so `b\u200bad` is `bad`)."""
    return unicodedata.normalize("NFKC", text).translate(_INVISIBLE).casefold()


def clean_phrase(phrase: str) -> str:
    """The form a phrase is stored in: normalised, single spaces; raises ValueError when unusable."""
    cleaned = " ".join(normalize(phrase).split())
    if not cleaned:
        raise ValueError("a blocked word or phrase can't be empty")
    if len(cleaned) > MAX_PHRASE_LENGTH:
        raise ValueError(f"a blocked phrase can be at most {MAX_PHRASE_LENGTH} characters")
    return cleaned


def _pattern(phrase: str) -> re.Pattern[str]:
    words = normalize(phrase).split()
    body = r"\s+".join(re.escape(word) for word in words)
    return re.compile(rf"(?<!\w){body}(?!\w)")


def find_blocked(prompt: str, phrases: Iterable[str]) -> str | None:
    """The first phrase of `phrases` that `prompt` contains as a whole word or phrase, else None."""
    text = normalize(prompt)
    for phrase in phrases:
        if phrase.strip() and _pattern(phrase).search(text):
            return phrase
    return None
