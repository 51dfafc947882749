"""Remix (PRODUCT.md): a job's prompt and flags written back as text a member can edit, and the
derived request with what the member submitted.

`remix_text` is what the modal is pre-filled with; the submitted text is parsed as `/imagine` parses
a prompt (`generation.prompts.command.parse_command`) and `remixed` takes its prompt-side settings
into the derived request, whose picture-side settings (source, size, seeds, edit) stay."""

from __future__ import annotations

import re
from dataclasses import replace

from generation.prompts.edits import EditError, parse_zoom
from generation.prompts.flags import split_flags
from generation.prompts.parser import clean_text
from generation.prompts.references import DEFAULT_WEIGHT, Reference, ReferenceKind
from generation.prompts.request import GenerationRequest, Mode

_ZOOM_FLAG = re.compile(r"(?:^|\s)--zoom(?:\s+(?P<value>[^\s-][^\s]*))?(?=\s|$)", re.IGNORECASE)


def remix_text(request: GenerationRequest, *, with_shape: bool = False) -> str:
    """`request`'s prompt with its flags (`--no`, `--steps`, `--cfg`, …) as a member would type them;
    `with_shape` adds `--ar` and `--n` (a reroll or a variation may change them, an edit may not)."""
    parts = [request.prompt + "".join(f" <lora:{name}:{weight:g}>" for name, weight in request.loras)]
    if with_shape:
        parts += [f"--ar {request.aspect}", f"--n {request.count}"]
    parts += [f"--steps {request.steps}", f"--cfg {request.guidance:g}"]
    if request.sampler:
        parts.append(f"--sampler {request.sampler}")
    if request.tile:
        parts.append("--tile")
    if request.stop < 100:
        parts.append(f"--stop {request.stop}")
    if request.chaos is not None and with_shape:
        parts.append(f"--chaos {request.chaos}")
    parts += reference_flags(request.references)
    if request.negative_prompt:
        parts.append(f"--no {request.negative_prompt}")  # last: `--no` runs to the next flag
    return " ".join(parts)


def reference_flags(references: tuple[Reference, ...]) -> list[str]:
    """`--sref URL… [--sw W]` and `--oref URL [--ow W]` for a request's style and subject references
    (a blend's pictures have no flag: a Remix keeps them as they are)."""
    flags = []
    for reference in references:
        if reference.kind is ReferenceKind.BLEND:
            continue
        ref, weight = ("--sref", "--sw") if reference.kind is ReferenceKind.STYLE else ("--oref", "--ow")
        flags.append(f"{ref} {' '.join(reference.origins)}")
        if reference.weight != DEFAULT_WEIGHT:
            flags.append(f"{weight} {reference.weight}")
    return flags


SHAPED_BY_REMIX = frozenset({Mode.TXT2IMG, Mode.IMG2IMG, Mode.VARIATION})
"""What a Remix text also shapes (`--ar`, `--n`, `--seed`): a reroll, or a variation whose picture is
then reframed to the new aspect (the engine crops its centre to it). Edits and upscales keep theirs."""


def remixed(derived: GenerationRequest, submitted: GenerationRequest) -> GenerationRequest:
    """`derived` (a variation, edit or reroll of a picture) with the prompt-side settings of
    `submitted` (the parsed remix text): prompt, negative, steps, guidance, sampler, adapters; for
    `SHAPED_BY_REMIX` modes its shape, count and seeds too."""
    out = replace(
        derived,
        prompt=submitted.prompt,
        negative_prompt=submitted.negative_prompt,
        steps=submitted.steps,
        guidance=submitted.guidance,
        sampler=submitted.sampler,
        tile=submitted.tile,
        stop=submitted.stop,
        chaos=submitted.chaos if derived.mode is Mode.TXT2IMG else derived.chaos,
        prompt_windows=submitted.prompt_windows,
        loras=submitted.loras,
        references=_remixed_references(derived.references, submitted.references),
        warnings=submitted.warnings,
    )
    if derived.mode not in SHAPED_BY_REMIX:
        return out
    return replace(
        out, width=submitted.width, height=submitted.height, aspect=submitted.aspect, seeds=submitted.seeds
    )


def _remixed_references(
    derived: tuple[Reference, ...], submitted: tuple[Reference, ...]
) -> tuple[Reference, ...]:
    """The submitted text's references, each with its pictures where the derived request already had
    them stored (same kind and URLs: not fetched again); a blend keeps its pictures."""
    if any(r.kind is ReferenceKind.BLEND for r in derived):
        return derived
    stored = {(r.kind, r.origins): r.images for r in derived if r.fetched}
    return tuple(
        r.with_images(stored[(r.kind, r.origins)]) if (r.kind, r.origins) in stored else r for r in submitted
    )


def gives_shape(text: str) -> bool:
    """Whether a Remix text names an aspect (`--ar`/`--aspect`), which only `SHAPED_BY_REMIX` takes."""
    return "aspect" in split_flags(clean_text(text))[1]


def split_zoom_flag(text: str) -> tuple[str, float | None]:
    """`text` without an inline `--zoom F`, and F (checked: 1 < F <= 2), or None when not given."""
    found = list(_ZOOM_FLAG.finditer(text))
    if not found:
        return text, None
    if len(found) > 1:
        raise EditError("Give `--zoom` once.")
    value = found[0]["value"]
    if value is None:
        raise EditError("`--zoom` needs a factor, like `--zoom 1.5`.")
    rest = (text[: found[0].start()] + " " + text[found[0].end() :]).strip()
    return " ".join(rest.split()), parse_zoom(value)
