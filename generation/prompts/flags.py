"""The inline flags of a prompt and the values they take (`--ar 16:9 --seed 42 --no text`).

The flag table, splitting a prompt's text from its flags, and reading each value, from the text or
from a slash option, with a precise `PromptError` naming the flag and what it allows.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from generation.prompts.errors import PromptError

ASPECT_CHOICES = ("1:1", "4:3", "3:4", "3:2", "2:3", "16:9", "9:16", "21:9")
MAX_RATIO = 4.0  # widest allowed is 4:1, tallest 1:4


@dataclass(frozen=True)
class _Flag:
    key: str  # canonical setting name
    names: tuple[str, ...]  # inline spellings, the first one shown in messages
    option: str  # the slash option with the same meaning
    takes_value: bool = True


_FLAGS = (
    _Flag("aspect", ("ar", "aspect"), "aspect"),
    _Flag("seed", ("seed",), "seed"),
    _Flag("negative", ("no",), "negative"),
    _Flag("steps", ("steps",), "steps"),
    _Flag("guidance", ("cfg", "guidance"), "guidance"),
    _Flag("count", ("n",), "count"),
    _Flag("strength", ("strength",), "strength"),
    _Flag("repeat", ("repeat", "r"), "repeat"),
    _Flag("tile", ("tile",), "tile", takes_value=False),
    _Flag("stop", ("stop",), "stop"),
    _Flag("chaos", ("chaos", "c"), "chaos"),
    _Flag("quality", ("quality", "q"), "quality"),
    _Flag("sampler", ("sampler",), "sampler"),
    _Flag("model", ("model",), "model"),
    _Flag("sref", ("sref",), "style_image"),  # up to 4 picture URLs, space-separated
    _Flag("sw", ("sw",), "sw"),
    _Flag("oref", ("oref",), "subject_image"),
    _Flag("ow", ("ow",), "ow"),
)
MULTI_VALUE_FLAGS = frozenset({"negative", "sref"})  # flags whose value may hold spaces
_BY_NAME = {name: flag for flag in _FLAGS for name in flag.names}
KNOWN_FLAGS = tuple(f"--{name}" for flag in _FLAGS for name in flag.names)
FLAG_NAMES = frozenset(_BY_NAME)

# `--name`, or `—name`/`–name` (phones turn `--` into a dash), at the start of a word.
_FLAG_RE = re.compile(r"(?<!\S)(--|[—–])(?=[A-Za-z])(\S+)")
_INT_RE = re.compile(r"[+-]?[0-9]+")
_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_ASPECT_RE = re.compile(r"([0-9]{1,6})\s*:\s*([0-9]{1,6})")


def show_value(value: str, limit: int = 40) -> str:
    """A value quoted for a Discord message: one line, short, no code-span breaking backticks."""
    text = " ".join(value.replace("`", "'").split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"`{text}`"


def show_number(value: float) -> str:
    """A number as a message shows it: 7, 7.5, 1e+20."""
    return str(value) if isinstance(value, int) else f"{value:g}"


def split_flags(text: str) -> tuple[str, dict[str, tuple[str, str]]]:
    """The prompt before the first flag, and {key: (spelling, raw value)} for each flag after it;
    PromptError for an unknown flag, one given twice, or a missing or extra value."""
    matches = []
    for m in _FLAG_RE.finditer(text):
        name = m.group(2).split("=", 1)[0].lower()
        if m.group(1) != "--" and name not in _BY_NAME:
            continue  # a dash in ordinary text
        matches.append(m)
    if not matches:
        return text, {}
    found: dict[str, tuple[str, str]] = {}
    for i, m in enumerate(matches):
        name, _, inline = m.group(2).partition("=")
        spelled = f"--{name.lower()}"
        flag = _BY_NAME.get(name.lower())
        if flag is None:
            raise PromptError(f"Unknown flag {show_value(spelled)}. Known flags: {', '.join(KNOWN_FLAGS)}.")
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        value = (inline + " " + text[m.end() : end]).strip()
        if flag.key in found:
            first = found[flag.key][0]
            same = "" if first == spelled else f" (as {show_value(first)} and {show_value(spelled)})"
            raise PromptError(f"{show_value('--' + flag.names[0])} is given twice{same}; give it once.")
        if not flag.takes_value:
            if value:
                raise PromptError(f"{show_value(spelled)} takes no value, but got {show_value(value)}.")
            found[flag.key] = (spelled, "on")
            continue
        if not value:
            example = {"negative": "text, watermark", "aspect": "16:9", "sref": "URL"}.get(flag.key, "…")
            shown = show_value(f"{spelled} {example}")
            raise PromptError(f"{show_value(spelled)} needs a value, e.g. {shown}.")
        if flag.key not in MULTI_VALUE_FLAGS and " " in value:
            raise PromptError(
                f"{show_value(spelled)} takes one value, but got {show_value(value)}. "
                "Put the flags after the prompt text."
            )
        found[flag.key] = (spelled, value)
    return text[: matches[0].start()], found


def parse_int(label: str, raw: str) -> int:
    """An inline flag's whole number (`label` names the flag in the message)."""
    if not _INT_RE.fullmatch(raw):
        raise PromptError(f"{label} must be a whole number, not {show_value(raw)}.")
    if len(raw) > 30:
        raise PromptError(f"{label} is far too large: {show_value(raw)}.")
    return int(raw)


def parse_float(label: str, raw: str) -> float:
    """An inline flag's number."""
    if not _FLOAT_RE.fullmatch(raw):
        raise PromptError(f"{label} must be a number like 7.5, not {show_value(raw)}.")
    return float(raw)


def option_int(label: str, value: object) -> int:
    """A slash option's whole number (a float that is whole counts)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PromptError(f"{label} must be a whole number.")
    if isinstance(value, float):
        if not (math.isfinite(value) and value.is_integer()):
            raise PromptError(f"{label} must be a whole number, not {show_number(value)}.")
        return int(value)
    return value


def option_float(label: str, value: object) -> float:
    """A slash option's number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PromptError(f"{label} must be a number.")
    try:
        return float(value)
    except OverflowError:
        raise PromptError(f"{label} is far too large.") from None


def check_range(label: str, value: float, low: float, high: float, what: str = "") -> None:
    """Refuse a value outside low..high (NaN too); `what` follows the range in the message."""
    if not (low <= value <= high):  # False for NaN too; exact for any int
        shown = show_number(value) if -1e15 < value < 1e15 else "that"
        between = f"between {show_number(low)} and {show_number(high)}{what}"
        raise PromptError(f"{label} must be {between}, not {shown}.")


def parse_aspect(label: str, raw: str) -> tuple[int, int]:
    """`W:H` as two positive integers with a ratio between 1:4 and 4:1, reduced (32:18 → 16:9)."""
    m = _ASPECT_RE.fullmatch(raw.strip())
    if m is None:
        raise PromptError(f"{label} must be a ratio like 16:9, not {show_value(raw)}.")
    w, h = int(m.group(1)), int(m.group(2))
    if w == 0 or h == 0:
        raise PromptError(f"{label} can't have a zero side: {show_value(raw)}.")
    if not 1 / MAX_RATIO <= w / h <= MAX_RATIO:
        raise PromptError(f"{label} must be between 1:4 and 4:1, not {show_value(raw)}.")
    g = math.gcd(w, h)
    return w // g, h // g
