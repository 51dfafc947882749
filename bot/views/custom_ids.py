"""Job ids and the buttons' `custom_id`s: `imagine:v:<job>:<i>` and `imagine:u:…` (an image of a
result), `imagine:r:<job>` (reroll), `imagine:c:<job>` (cancel, on a progress message),
`imagine:i:<job>` (📋 the job's parameters), `imagine:d:<job>` (🗑️ delete the result),
`imagine:e:<job>:<edit>` (an edit of a one-image result: `Vary (Subtle)`, `Zoom Out 2x`, `⬅️`, …, and
its `Animate (Low motion)`/`(High motion)`) and `imagine:x:<job>` (`Extend` a clip).

Custom ids come back from Discord untrusted: `parse_custom_id` accepts only the exact shapes made
here (a forged id is then checked against the store by the handler: job exists, same guild).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from enum import StrEnum

from generation.prompts.request import MAX_IMAGES

JOB_ID_PATTERN = r"[0-9a-f]{12}"
_JOB_ID_RE = re.compile(rf"^{JOB_ID_PATTERN}$")


class Action(StrEnum):
    """What a button asks for."""

    VARIATION = "v"
    UPSCALE = "u"
    REROLL = "r"
    CANCEL = "c"
    INFO = "i"
    DELETE = "d"
    EDIT = "e"
    EXTEND = "x"  # a clip, about 4 s more from its last frame


class EditButton(StrEnum):
    """The edit buttons of a one-image result (their custom ids carry the value)."""

    VARY_SUBTLE = "vs"
    VARY_STRONG = "vt"
    VARY_REGION = "vr"
    ZOOM_2X = "z2"
    ZOOM_15X = "zh"
    CUSTOM_ZOOM = "zc"
    PAN_LEFT = "pl"
    PAN_RIGHT = "pr"
    PAN_UP = "pu"
    PAN_DOWN = "pd"
    MAKE_SQUARE = "sq"
    UPSCALE_SUBTLE = "us"
    UPSCALE_CREATIVE = "uc"
    ANIMATE_LOW = "al"  # the picture becomes a clip (VIDEO_MODEL), low motion
    ANIMATE_HIGH = "ah"
    INSTRUCT = "ei"  # `Edit`: the picture changed as the member's words say (EDIT_MODEL)


INDEXED_ACTIONS = frozenset({Action.VARIATION, Action.UPSCALE})
"""Actions on one image of a result (their ids carry its index)."""
DERIVING_ACTIONS = frozenset({Action.VARIATION, Action.UPSCALE, Action.REROLL, Action.EDIT, Action.EXTEND})
"""Actions that make a new job from a result."""
ANIMATE_BUTTONS = frozenset({EditButton.ANIMATE_LOW, EditButton.ANIMATE_HIGH})
"""The one-image result's buttons that make a clip (on the video model, not the picture's)."""
SECOND_MODEL_BUTTONS = ANIMATE_BUTTONS | {EditButton.INSTRUCT}
"""The one-image result's buttons that run on a second model (VIDEO_MODEL, EDIT_MODEL), not the picture's."""


CUSTOM_ID_PREFIX = "imagine:"

# The templates DynamicItem classes register; index is 1-based in custom ids, as on the labels.
INDEXED_TEMPLATE = rf"imagine:(?P<action>[vu]):(?P<job>{JOB_ID_PATTERN}):(?P<index>[1-{MAX_IMAGES}])"
JOB_TEMPLATE = rf"imagine:(?P<action>[rcidx]):(?P<job>{JOB_ID_PATTERN})"
PROMPT_TEMPLATE = r"imagine:p:(?P<index>[1-4])"
"""`Imagine 1`–`Imagine 4` under a `/describe` answer: the prompt is that message's line N."""
EDIT_TEMPLATE = rf"imagine:e:(?P<job>{JOB_ID_PATTERN}):(?P<edit>{'|'.join(e.value for e in EditButton)})"
_PROMPT_RE = re.compile(rf"^{PROMPT_TEMPLATE}$")
_JOB_RENAMED = JOB_TEMPLATE.replace("?P<job>", "?P<jjob>").replace("?P<action>", "?P<jaction>")
_EDIT_RENAMED = EDIT_TEMPLATE.replace("?P<job>", "?P<ejob>")
_FULL_RE = re.compile(rf"^(?:{INDEXED_TEMPLATE}|{_JOB_RENAMED}|{_EDIT_RENAMED})$")


@dataclass(frozen=True)
class ButtonRef:
    """A parsed button: the action, the job it points at, the image index (0-based; 0 for actions on
    the whole job) and, for `Action.EDIT`, which edit."""

    action: Action
    job_id: str
    index: int = 0
    edit: EditButton | None = None


def new_job_id() -> str:
    """A fresh random job id (12 hex digits)."""
    return secrets.token_hex(6)


def is_job_id(text: str) -> bool:
    """True if `text` has the shape of a job id."""
    return bool(_JOB_ID_RE.match(text))


def make_custom_id(ref: ButtonRef) -> str:
    """The custom_id of a button."""
    if not is_job_id(ref.job_id):
        raise ValueError(f"not a job id: {ref.job_id!r}")
    if ref.action is Action.EDIT:
        if ref.edit is None:
            raise ValueError("an edit button needs its edit")
        return f"imagine:e:{ref.job_id}:{ref.edit.value}"
    if ref.action not in INDEXED_ACTIONS:
        return f"imagine:{ref.action.value}:{ref.job_id}"
    if not 0 <= ref.index < MAX_IMAGES:
        raise ValueError(f"image index out of range: {ref.index}")
    return f"imagine:{ref.action.value}:{ref.job_id}:{ref.index + 1}"


def is_known_custom_id(custom_id: str) -> bool:
    """True for every custom id this version of the bot makes (a job's buttons and the prompt ones)."""
    return parse_custom_id(custom_id) is not None or bool(_PROMPT_RE.match(custom_id))


def parse_custom_id(custom_id: str) -> ButtonRef | None:
    """The button a custom_id names, or None when it is not one of ours (or malformed)."""
    match = _FULL_RE.match(custom_id)
    if match is None:
        return None
    if match["jjob"] is not None:
        return ButtonRef(Action(match["jaction"]), match["jjob"])
    if match["ejob"] is not None:
        return ButtonRef(Action.EDIT, match["ejob"], edit=EditButton(match["edit"]))
    return ButtonRef(Action(match["action"]), match["job"], int(match["index"]) - 1)
