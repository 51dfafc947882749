"""The texts of a job's own messages: queue position, progress, the result's caption. Pure functions,
in Discord's markdown (mentions are `<@id>`)."""

from __future__ import annotations

from generation.prompts.request import GenerationRequest, Mode
from generation.prompts.samplers import SAMPLER_LABELS
from storage.interface import JobRecord, JobState

MAX_PROMPT_SHOWN = 1500


def shorten(text: str, limit: int) -> str:
    """`text` cut to `limit` characters with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def quote(text: str) -> str:
    """Text shown inside bold or code without breaking Discord markdown or pinging anyone."""
    return text.replace("`", "ˋ").replace("*", "∗").replace("@", "@\u200b")


def describe_request(request: GenerationRequest, seeds: tuple[int, ...] | None = None) -> str:
    """One line of settings: seeds, size, steps, guidance, model (and strength when it applies)."""
    shown = request.seeds if seeds is None else seeds
    label = "seed" if len(shown) == 1 else "seeds"
    if request.video is not None:  # a clip: its size and steps are the video model's own
        return " · ".join(
            (
                f"{label} {', '.join(str(s) for s in shown)}",
                f"{request.video.motion.value} motion",
                f"model {request.model}",
            )
        )
    parts = [
        f"{label} {', '.join(str(s) for s in shown)}",
        f"{request.width}×{request.height} ({request.aspect})",
        f"{request.steps} steps",
        f"cfg {request.guidance:g}",
    ]
    if request.strength is not None and request.mode is not Mode.TXT2IMG:
        parts.append(f"strength {request.strength:g}")
    parts.append(f"model {request.model}")
    return " · ".join(parts)


_MODE_TEXT = {
    Mode.TXT2IMG: "",
    Mode.IMG2IMG: " (from your picture)",
    Mode.VARIATION: " (variation)",
    Mode.UPSCALE: " (upscale)",
    Mode.EDIT: " (edit)",
    Mode.ANIMATE: " (video)",
    Mode.INSTRUCT: " (edit in words)",
}


def result_text(
    request: GenerationRequest, seeds: tuple[int, ...], owner_id: int, *, mention: bool, note: str = ""
) -> str:
    """The text above a result: prompt, negative prompt, settings; a mention when posted to the channel."""
    action = request.edit or request.video
    what = f" ({action.describe()})" if action is not None else _MODE_TEXT[request.mode]
    lines = [f"**{quote(shorten(request.prompt, MAX_PROMPT_SHOWN))}**{what}"]
    if request.negative_prompt:
        lines.append(f"not: {quote(shorten(request.negative_prompt, 200))}")
    lines.append(describe_request(request, seeds))
    who = f"<@{owner_id}>" if mention else "you"
    lines.append(f"for {who}{note}")
    return "\n".join(lines)


def queued_text(position: int) -> str:
    """Progress text while waiting."""
    return "Queued: next to run…" if position <= 1 else f"Queued: position {position}…"


def progress_text(step: int, total: int) -> str:
    """Progress text while running."""
    return f"Generating… step {step} of {total}"


def made_from(job: JobRecord, request: GenerationRequest) -> str:
    """What a job started from: a prompt, the member's picture, or image n of an earlier job."""
    parent = f"job `{job.parent_job_id}`" if job.parent_job_id else "an earlier job"
    image = f"image {job.parent_index + 1} of {parent}" if job.parent_index is not None else parent
    if request.edit is not None:
        return f"{request.edit.describe()} of {image}"
    if request.video is not None:
        if request.video.extend:
            return f"more of the clip of {parent}"
        return f"a clip of {image}" if job.parent_job_id else "a clip of the member's own picture"
    if request.mode is Mode.INSTRUCT:
        own = "the member's own picture"
        return f"an edit in words of {image if job.parent_job_id else own}"
    if request.mode is Mode.VARIATION:
        return f"a variation of {image}"
    if request.mode is Mode.UPSCALE:
        return f"an upscale of {image}"
    if request.mode is Mode.IMG2IMG:
        return "the member's own picture"
    return f"a reroll of {parent}" if job.parent_job_id else "the prompt alone"


def details_text(job: JobRecord, request: GenerationRequest) -> str:
    """Everything about a job (the 📋 button): prompt, negative, seeds, model, size, steps, source."""
    seeds = job.seeds or request.seeds
    negative = quote(shorten(request.negative_prompt, 200)) if request.negative_prompt else "(none)"
    sampler = SAMPLER_LABELS.get(request.sampler, request.sampler) if request.sampler else "the model's own"
    lines = [
        f"**Job `{job.job_id}`** by <@{job.owner_id}>: {job.state.value}",
        f"**Prompt:** {quote(shorten(request.prompt, MAX_PROMPT_SHOWN))}",
        f"**Negative:** {negative}",
        f"**Seeds:** {', '.join(str(s) for s in seeds)}",
        f"**Model:** {quote(request.model)} · **Sampler:** {sampler}",
        f"**Size:** {request.width}×{request.height} ({request.aspect}) · "
        + (
            f"**Steps:** {request.steps} · **CFG:** {request.guidance:g}"
            if request.steps
            else "**Steps** and **CFG:** the model's own"  # an Edit in words: its PNG says them
        )
        if request.video is None
        else f"**Video:** {request.video.motion.value} motion; size, frames and steps the video model's own",
        f"**Made from:** {made_from(job, request)}",
    ]
    if request.strength is not None and request.mode is not Mode.TXT2IMG:
        lines.append(f"**Strength:** {request.strength:g}")
    extras = [("tiled", request.tile), (f"stopped at {request.stop}%", request.stop < 100)]
    if request.chaos is not None:
        extras.append((f"chaos {request.chaos}", True))
    if any(on for _, on in extras):
        lines.append("**Also:** " + ", ".join(text for text, on in extras if on))
    if job.error and job.state is not JobState.DONE:
        lines.append(f"**Why it ended:** {quote(shorten(job.error, 300))}")
    return "\n".join(lines)


def given_back_text(images: int, refunded: bool) -> str:
    """ " Your 3 images were given back." when the refund happened, else nothing."""
    return f" Your {images} image{'s were' if images != 1 else ' was'} given back." if refunded else ""


def refused_text(job_id: str, reason: str, images: int, refunded: bool) -> str:
    """The owner's private note when Discord refused a job's result for good."""
    back = given_back_text(images, refunded)
    return f"Sorry, I couldn't post the result of your job `{job_id}`: {reason}.{back}"
