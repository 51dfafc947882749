"""Text-level prompt grammar, applied before the flags are parsed: personal macros and `{a, b}`
permutations.

`expand_macros` replaces `--name` by a member's macro value (once: values are not expanded again);
`expand_permutations` turns `a {red, blue} fox` into one text per combination (nested groups and
several groups multiply), refusing more than `MAX_JOBS` before building any. Pure; every bad input
raises `PromptError`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from generation.prompts.errors import PromptError

MAX_JOBS = 16  # jobs one command may make (permutations × repeats)
MAX_REPEAT = 8
MAX_MACROS = 25  # per member per guild
MAX_MACRO_VALUE = 400  # characters
MACRO_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
_MACRO_USE_RE = re.compile(r"(?<!\S)(?:--|[—–])([A-Za-z][A-Za-z0-9_]*)(?=\s|=|$)")
_FLAG_IN_VALUE_RE = re.compile(r"(?<!\S)--([A-Za-z][A-Za-z0-9_]*)")


# macros -------------------------------------------------------------------------------------------


def expand_macros(text: str, macros: Mapping[str, str], known_flags: frozenset[str]) -> str:
    """`text` with every `--name` (name a macro, not a flag in `known_flags`) replaced by its value.
    Values are inserted as they are, never expanded again (no recursion)."""
    if not macros:
        return text

    def swap(m: re.Match[str]) -> str:
        name = m.group(1).lower()
        if name in known_flags or name not in macros:
            return m.group(0)
        return macros[name]

    return _MACRO_USE_RE.sub(swap, text)


def check_macro(name: str, value: str, known_flags: frozenset[str]) -> tuple[str, str]:
    """The macro's name (lower case, without `--`) and value, checked: a short name that is not a
    flag, a value of at most MAX_MACRO_VALUE characters whose flags are all real flags (so a macro
    never names another macro)."""
    key = name.strip().removeprefix("--").lower()
    if not MACRO_NAME_RE.fullmatch(key):
        raise PromptError(
            "A macro name is 1–32 letters, digits or `_`, starting with a letter (used as `--name`)."
        )
    if key in known_flags:
        raise PromptError(f"`--{key}` is a flag already; pick another name.")
    text = " ".join(value.split())
    if not text:
        raise PromptError("A macro needs a value, e.g. `golden hour, 35mm --ar 3:2`.")
    if len(text) > MAX_MACRO_VALUE:
        raise PromptError(f"A macro's value is at most {MAX_MACRO_VALUE} characters, not {len(text)}.")
    for m in _FLAG_IN_VALUE_RE.finditer(text):
        if m.group(1).lower() not in known_flags:
            raise PromptError(
                f"A macro's value may use flags, not other macros or unknown flags: `--{m.group(1)}`."
            )
    return key, text


# permutations -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Group:
    options: tuple[_Seq, ...]


_Seq = tuple[str | _Group, ...]
_ESCAPES = {"\\{": "{", "\\}": "}", "\\,": ","}
_TOKEN_RE = re.compile(r"\\[{},]|[{},]|[^\\{},]+|\\")


def _parse_groups(text: str) -> _Seq:
    """The text as literal runs and `{…}` groups; PromptError for an unbalanced brace."""
    stack: list[tuple[list[_Seq], list[str | _Group]]] = []
    current: list[str | _Group] = []
    for token in _TOKEN_RE.findall(text):
        if token == "{":
            stack.append(([], current))
            current = []
        elif token == "}":
            if not stack:
                raise PromptError("There is a `}` without its `{`: write `\\}` for a literal brace.")
            options, outer = stack.pop()
            options.append(tuple(current))
            outer.append(_Group(tuple(options)))
            current = outer
        elif token == "," and stack:
            stack[-1][0].append(tuple(current))
            current = []
        else:
            current.append(_ESCAPES.get(token, token))
    if stack:
        raise PromptError("A `{` is never closed: close it with `}`, or write `\\{` for a literal brace.")
    return tuple(current)


_CAP = 10**9  # counts saturate here (a prompt can describe astronomically many combinations)


def _count(seq: _Seq) -> int:
    total = 1
    for part in seq:
        if isinstance(part, _Group):
            total = min(_CAP, total * min(_CAP, sum(_count(o) for o in part.options)))
    return total


def _expand(seq: _Seq) -> list[str]:
    out = [""]
    for part in seq:
        if isinstance(part, _Group):
            choices = [text.strip() for option in part.options for text in _expand(option)]
            out = [head + choice for head in out for choice in choices]
        else:
            out = [head + part for head in out]
    return out


def count_permutations(text: str) -> int:
    """How many texts `expand_permutations(text)` makes (saturating at 10**9)."""
    return _count(_parse_groups(text))


def expand_permutations(text: str, limit: int = MAX_JOBS) -> list[str]:
    """One text per combination of the `{a, b, …}` groups, in order (the first option varies last);
    `\\{`, `\\}`, `\\,` are literal. More than `limit` combinations is refused with the count."""
    seq = _parse_groups(text)
    count = _count(seq)
    if count > limit:
        shown = f"{count:,}" if count < _CAP else "more than a billion"
        raise PromptError(f"That prompt makes {shown} combinations; one command makes at most {limit} jobs.")
    return [" ".join(t.split()) for t in _expand(seq)]
