"""One `/imagine` command → its jobs: macros expanded, `{a, b}` permutations, `--repeat`.

Pure, like the parser it drives: `parse_command` returns every request before anything is spent,
and refuses (PromptError) a command of more than `MAX_JOBS` jobs with the count.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from generation.prompts.errors import PromptError
from generation.prompts.flags import FLAG_NAMES
from generation.prompts.grammar import MAX_JOBS, expand_macros, expand_permutations
from generation.prompts.parser import ParseContext, parse_one
from generation.prompts.references import ReferenceKind
from generation.prompts.request import GenerationRequest, Mode, ModelProfile, PromptDefaults, PromptOptions


def parse_command(
    text: str,
    options: PromptOptions,
    profile: ModelProfile,
    *,
    count_tokens: Callable[[str], int],
    random_seed: Callable[[], int],
    defaults: PromptDefaults | None = None,
    macros: Mapping[str, str] | None = None,
    mode: Mode = Mode.TXT2IMG,
    source_image: str | None = None,
    models: Sequence[str] = (),
    loras: Sequence[str] = (),
    profiles: Mapping[str, ModelProfile] | None = None,
    counters: Mapping[str, Callable[[str], int]] | None = None,
    source_size: tuple[int, int] | None = None,
    attached: Mapping[ReferenceKind, str] | None = None,
) -> list[GenerationRequest]:
    """The jobs of one command, in order: for each permutation of the text (after `macros`), its
    request and then its `--repeat` copies (`ParsedPrompt.jobs`). `profiles` and `counters` hold each
    model's own (a job is checked against the model it names); `profile` is the default model's.
    `source_size`: the source picture's size, whose aspect a job without `--ar` takes; `attached`: the
    URLs of the reference pictures attached as slash options (`style_image`, `subject_image`)."""
    expanded = expand_macros(text if isinstance(text, str) else "", macros or {}, FLAG_NAMES)
    variants = expand_permutations(expanded, MAX_JOBS)
    context = ParseContext(
        profile,
        count_tokens,
        random_seed,
        defaults,
        mode,
        source_image,
        models,
        loras,
        source_size,
        profiles or {},
        counters or {},
        attached or {},
    )
    parsed = [parse_one(variant, options, context) for variant in variants]
    total = sum(p.repeat for p in parsed)
    if total > MAX_JOBS:
        raise PromptError(f"That command makes {total} jobs; one command makes at most {MAX_JOBS}.")
    return [request for one in parsed for request in one.jobs(random_seed)]
