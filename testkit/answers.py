"""How the bot answered an interaction, read off the loopback Discord's messages and records."""

from __future__ import annotations

import re
from collections.abc import Iterable

from testkit.discord_loopback import InteractionRecord, Message

JOB_RE = re.compile(r"imagine:[uvrx]:([0-9a-f]{12})")
"""A result button's custom id (whole, it is the 🔄 one's, or a clip's `Extend`); group 1 is the job id."""


def is_result(message: Message | None) -> bool:
    """A finished result: live, not loading, with an attachment and the result buttons (a progress
    message has a preview and a `Cancel` button, but no 🔄)."""
    return (
        message is not None
        and not message.deleted
        and not message.loading
        and bool(message.attachments)
        and any(JOB_RE.fullmatch(cid) for cid in message.custom_ids)
    )


def live_ephemeral(rec: InteractionRecord) -> list[Message]:
    """The interaction's live, finished ephemeral answers (refusals and the like)."""
    return [m for m in rec.messages if m.ephemeral and not m.deleted and not m.loading]


def is_failure(rec: InteractionRecord) -> bool:
    """The job was granted but failed: @original says so (no image)."""
    m = rec.original
    return m is not None and not m.deleted and not m.loading and m.content.startswith("Sorry")


def job_of(message: Message) -> str | None:
    """The job id on a result's buttons, if any."""
    for cid in message.custom_ids:
        match = JOB_RE.fullmatch(cid)
        if match:
            return match.group(1)
    return None


def is_generating(rec: InteractionRecord) -> bool:
    """@original shows the job's steps (it is on the engine)."""
    return rec.original is not None and "step" in rec.original.content.lower()


def mid_generation(recs: list[InteractionRecord]) -> bool:
    """Every job acknowledged, and at least one of them reporting steps."""
    return all(r.acknowledged for r in recs) and any(is_generating(r) for r in recs)


def results_for(messages: Iterable[Message], job_id: str) -> list[Message]:
    """The finished results among `messages` that carry `job_id` on their buttons."""
    return [m for m in messages if is_result(m) and any(job_id in c for c in m.custom_ids)]


def button_labels(message: Message) -> list[str]:
    """The message's buttons as a member reads them: each one's label, else its emoji, in order."""
    return [
        str(c.get("label") or c.get("emoji", {}).get("name"))
        for row in message.components
        for c in row["components"]
    ]


def button_id(message: Message, label: str) -> str:
    """The custom id of the message's one button read as `label` (its label, else its emoji)."""
    [custom_id] = [
        c["custom_id"]
        for row in message.components
        for c in row["components"]
        if (c.get("label") or c.get("emoji", {}).get("name")) == label
    ]
    return str(custom_id)
