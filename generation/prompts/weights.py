"""Prompt weights: Midjourney's multi-prompts (`cat::2 dog::1`) and AUTOMATIC1111's emphasis
(`(word:1.3)`, `(word)` ×1.1, `[word]` ÷1.1, `\\(` a literal parenthesis) as typed weighted fragments.

Pure. `parse_weights` gives the parts of a multi-prompt, each a tuple of `Fragment`s whose text is
the words alone (no syntax): that is what reaches the tokenizer. Unbalanced brackets follow
AUTOMATIC1111 (an unclosed `(` emphasises the rest; a stray `)` is kept as text). Weights outside
±MAX_WEIGHT raise `PromptError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from generation.prompts.errors import PromptError

EMPHASIS = 1.1  # `(word)` multiplies by this, `[word]` divides
MAX_WEIGHT = 10.0
_NUMBER = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_MULTI_RE = re.compile(rf"::\s*({_NUMBER})?(?=\s|$|[^0-9.])")
_ATTENTION_RE = re.compile(rf"\\[()\[\]\\]|\(|\[|:\s*({_NUMBER})\s*\)|\)|\]|[^\\()\[\]:]+|:|\\")
_SYNTAX_RE = re.compile(r"::|[()\[\]]|\\")


@dataclass(frozen=True)
class Fragment:
    """Words and the weight on their token embeddings (1.0 = plain)."""

    text: str
    weight: float


@dataclass(frozen=True)
class Part:
    """One part of a multi-prompt: its weight (negative: pushed away) and its fragments."""

    weight: float
    fragments: tuple[Fragment, ...]

    @property
    def text(self) -> str:
        """The part's words without any syntax."""
        return "".join(f.text for f in self.fragments).strip()


def uses_weights(text: str) -> bool:
    """True when `text` holds any weight syntax (`::`, brackets or a backslash escape)."""
    return _SYNTAX_RE.search(text) is not None


def _check(weight: float, what: str) -> float:
    if not -MAX_WEIGHT <= weight <= MAX_WEIGHT:
        raise PromptError(f"{what} must be between -{MAX_WEIGHT:g} and {MAX_WEIGHT:g}, not {weight:g}.")
    return weight


def parse_emphasis(text: str) -> tuple[Fragment, ...]:
    """AUTOMATIC1111's emphasis over `text`: fragments with their multiplied weights, neighbours of
    equal weight merged, empty ones dropped."""
    pieces: list[list[object]] = []  # [text, weight]
    round_open: list[int] = []
    square_open: list[int] = []

    def scale(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            piece[1] = float(piece[1]) * factor  # type: ignore[arg-type]

    for m in _ATTENTION_RE.finditer(text):
        token, number = m.group(0), m.group(1)
        if token.startswith("\\") and len(token) == 2:
            pieces.append([token[1], 1.0])
        elif token == "(":
            round_open.append(len(pieces))
        elif token == "[":
            square_open.append(len(pieces))
        elif number is not None and round_open:
            scale(round_open.pop(), _check(float(number), "An emphasis weight like `(word:1.3)`"))
        elif token == ")" and round_open:
            scale(round_open.pop(), EMPHASIS)
        elif token == "]" and square_open:
            scale(square_open.pop(), 1 / EMPHASIS)
        else:
            pieces.append([token, 1.0])
    for start in round_open:
        scale(start, EMPHASIS)
    for start in square_open:
        scale(start, 1 / EMPHASIS)
    merged: list[Fragment] = []
    for raw, weight in pieces:
        piece_text, piece_weight = str(raw), float(weight)  # type: ignore[arg-type]
        if merged and merged[-1].weight == piece_weight:
            merged[-1] = Fragment(merged[-1].text + piece_text, piece_weight)
        elif piece_text:
            merged.append(Fragment(piece_text, piece_weight))
    return tuple(f for f in merged if f.text)


def parse_weights(text: str) -> tuple[Part, ...]:
    """The multi-prompt parts of `text` (`a::2 b::-0.5 c` → a ×2, b ×-0.5, c ×1), each parsed for
    emphasis. Empty parts are dropped; at least one part must weigh more than zero."""
    parts: list[Part] = []
    start = 0
    for m in _MULTI_RE.finditer(text):
        weight = 1.0 if m.group(1) is None else _check(float(m.group(1)), "A multi-prompt weight (`::2`)")
        parts.append(Part(weight, parse_emphasis(text[start : m.start()])))
        start = m.end()
    parts.append(Part(1.0, parse_emphasis(text[start:])))
    kept = tuple(p for p in parts if p.text)
    if kept and not any(p.weight > 0 for p in kept):
        raise PromptError("A multi-prompt needs at least one part with a weight above 0.")
    return kept


def plain_text(text: str) -> str:
    """`text` as the tokenizer sees it: every part's words, syntax removed, joined by spaces. Colons
    that came together when brackets between them went (`:[:`) are kept apart, so the plain text
    never reads as a multi-prompt separator."""
    words = " ".join(" ".join(p.text for p in parse_weights(text)).split())
    return re.sub(r":(?=:)", ": ", words)


def weighted_sides(prompt: str, negative: str) -> tuple[tuple[Part, ...], list[Fragment]]:
    """The prompt's positive parts, and the negative side's fragments: the negative prompt's, then
    each part of the prompt with a negative weight at |weight| / (mean positive weight), as
    Midjourney's `dog::-1` pushes away (what every weighted encoder encodes)."""
    parts = parse_weights(prompt)
    positive = tuple(p for p in parts if p.weight > 0)
    mean_weight = sum(p.weight for p in positive) / len(positive)
    fragments: list[Fragment] = []
    for part in parse_weights(negative):
        fragments += [Fragment(f.text, f.weight * abs(part.weight)) for f in part.fragments]
    for part in parts:
        if part.weight < 0:
            scale = abs(part.weight) / mean_weight
            if fragments:
                fragments.append(Fragment(", ", 1.0))
            fragments += [Fragment(f.text, f.weight * scale) for f in part.fragments]
    return positive, fragments
