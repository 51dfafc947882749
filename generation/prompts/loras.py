"""`<lora:name:0.8>` in a prompt (AUTOMATIC1111's syntax): which LoRA adapters a job applies (pure).

The tags leave the prompt (the words reach the tokenizer without them); the adapters become the
request's `loras`, sorted by name, so jobs with the same adapters and weights batch together."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from generation.prompts.errors import PromptError

LORA_TAG = re.compile(r"<lora:([^:<>]+)(?::([^<>]*))?>", re.IGNORECASE)
MAX_LORAS = 4
MAX_LORA_WEIGHT = 2.0

Loras = tuple[tuple[str, float], ...]


def extract_loras(text: str, available: Sequence[str]) -> tuple[str, Loras]:
    """The text without its `<lora:…>` tags, and the adapters they name (by the name `available`
    spells). Raises PromptError for an unknown name, a bad weight, a repeat or too many."""
    found: dict[str, float] = {}
    by_key = {name.casefold(): name for name in available}
    for match in LORA_TAG.finditer(text):
        raw_name, raw_weight = match.group(1).strip(), match.group(2)
        name = by_key.get(raw_name.casefold())
        if name is None:
            offered = ", ".join(sorted(available)[:10]) if available else "none are installed"
            raise PromptError(
                f"There's no LoRA called `{raw_name[:40]}` here ({offered}); `/loras` lists them."
            )
        weight = _weight(raw_name, raw_weight)
        if name in found:
            raise PromptError(f"`<lora:{name}>` is given twice; give it once, with one weight.")
        found[name] = weight
    if len(found) > MAX_LORAS:
        raise PromptError(f"A prompt may apply at most {MAX_LORAS} LoRAs, not {len(found)}.")
    stripped = " ".join(LORA_TAG.sub(" ", text).split())
    return stripped, tuple(sorted(found.items()))


def _weight(name: str, raw: str | None) -> float:
    if raw is None or not raw.strip():
        return 1.0
    try:
        weight = float(raw.strip())
    except ValueError:
        raise PromptError(f"The weight of `<lora:{name}>` must be a number, like 0.8.") from None
    if not math.isfinite(weight) or abs(weight) > MAX_LORA_WEIGHT:
        raise PromptError(f"The weight of `<lora:{name}>` must be between -2 and 2.")
    return weight


def with_lora_option(text: str, option: str | None) -> str:
    """The prompt with the `lora` slash option (`name`, or `name:weight`) as a `<lora:…>` tag in
    front; an inline tag naming the same adapter gives way to it (a slash option wins). Raises
    PromptError for a value that is not a name."""
    if option is None or not option.strip():
        return text
    value = " ".join(option.split())
    name = value.split(":", 1)[0].strip()
    if not name or any(c in value for c in "<>"):
        raise PromptError("The `lora` option takes a LoRA's name (`/loras` lists them), like `ink:0.8`.")
    wanted = name.casefold()
    kept = LORA_TAG.sub(lambda m: " " if m.group(1).strip().casefold() == wanted else m.group(0), text)
    return f"<lora:{value}> {kept}"
