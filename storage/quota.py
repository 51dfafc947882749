"""Limit arithmetic, free of SQL: precedence of overrides, sliding windows, which refusal to report.

Precedence, per field: the user override if it sets the field; else the most generous value among the
member's role overrides that set it (unlimited beats any number, a larger count beats a smaller, a
shorter cooldown beats a longer); else the guild default if it sets it; else the settings' defaults.
A field an override leaves unset (None) falls through to the next level; the rest of that override
still applies.

Windows are half-open: a spend at time `t` counts in the hour window while `now < t + 3600`, so at
exactly `t + 3600` it has left. A request for `n` images fits when `used + n <= limit`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import fields

from storage.interface import UNLIMITED, LimitName, Limits, LimitsPatch, Refusal, Usage

HOUR_S = 3600.0
DAY_S = 86400.0
COUNT_FIELDS = ("images_per_hour", "images_per_day", "max_queued")


def validate_patch(patch: LimitsPatch) -> None:
    """Raise ValueError for a count below UNLIMITED (-1) or a negative cooldown."""
    for name in COUNT_FIELDS:
        value = getattr(patch, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < UNLIMITED):
            raise ValueError(f"{name} must be a whole number >= 0 (or UNLIMITED), not {value!r}")
    cooldown = patch.cooldown_seconds
    if cooldown is not None and (not math.isfinite(cooldown) or cooldown < 0):
        raise ValueError(f"cooldown_seconds must be >= 0, not {cooldown!r}")


def validate_refund_count(count: int) -> None:
    """Raise ValueError unless `count` (images to give back) is a whole number >= 1."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"a refund gives back at least one image, not {count!r}")


def _more_generous_count(a: int, b: int) -> int:
    if a == UNLIMITED or b == UNLIMITED:
        return UNLIMITED
    return max(a, b)


def most_generous(patches: Iterable[LimitsPatch]) -> LimitsPatch:
    """Merge role overrides field by field, keeping the most generous value any of them sets."""
    merged: dict[str, int | float | None] = {f.name: None for f in fields(LimitsPatch)}
    for patch in patches:
        for name in COUNT_FIELDS:
            value = getattr(patch, name)
            if value is not None:
                current = merged[name]
                merged[name] = value if current is None else _more_generous_count(int(current), value)
        cooldown = patch.cooldown_seconds
        if cooldown is not None:
            current = merged["cooldown_seconds"]
            merged["cooldown_seconds"] = cooldown if current is None else min(float(current), cooldown)
    return LimitsPatch(**merged)  # type: ignore[arg-type]


def resolve(
    defaults: Limits,
    guild: LimitsPatch | None,
    roles: Sequence[LimitsPatch],
    user: LimitsPatch | None,
) -> Limits:
    """The effective limits: user, else most generous role, else guild, else `defaults`, per field."""
    levels = [p for p in (user, most_generous(roles) if roles else None, guild) if p is not None]

    def pick(name: str) -> int | float | None:
        for level in levels:
            value = getattr(level, name)
            if value is not None:
                return value  # type: ignore[no-any-return]
        return None

    counts: dict[str, int | None] = {}
    for name in COUNT_FIELDS:
        value = pick(name)
        if value is None:
            counts[name] = getattr(defaults, name)
        else:
            counts[name] = None if value == UNLIMITED else int(value)
    cooldown = pick("cooldown_seconds")
    return Limits(
        images_per_hour=counts["images_per_hour"],
        images_per_day=counts["images_per_day"],
        max_queued=counts["max_queued"],
        cooldown_seconds=defaults.cooldown_seconds if cooldown is None else float(cooldown),
    )


def window_retry_at(spends: Sequence[tuple[float, int]], n: int, limit: int, window_s: float) -> float:
    """When enough of the oldest `spends` (at, images; oldest first, all inside the window) have left
    the window for `n` more images to fit under `limit`; `math.inf` if `n > limit`."""
    if n > limit:
        return math.inf
    need = sum(images for _, images in spends) + n - limit
    freed = 0
    for at, images in spends:
        freed += images
        if freed >= need:
            return at + window_s
    return math.inf  # unreachable when the spends are the window's contents


def pick_refusal(candidates: Sequence[tuple[LimitName, float]]) -> tuple[LimitName, float] | None:
    """Of several failed limits, report the one that frees up last: the true time a retry can pass.

    `MAX_QUEUED` carries the time of the refusal (its freeing is not a matter of time), so any failed
    time-based limit wins over it.
    """
    if not candidates:
        return None
    return max(candidates, key=lambda c: (c[0] is not LimitName.MAX_QUEUED, c[1]))


def check(
    limits: Limits,
    spends: Sequence[tuple[float, int]],
    last_spend_at: float | None,
    queued: int,
    n: int,
    now: float,
) -> Refusal | None:
    """Whether `n` more images may be spent now; None if every limit passes.

    `spends`: the member's (at, images) not refunded, oldest first, covering at least every window
    whose limit is set (those older than a day are ignored). `last_spend_at`: their latest spend
    (not refunded), for the cooldown. `queued`: their queued and running jobs.
    """
    failed: list[tuple[LimitName, float]] = []
    if (
        limits.cooldown_seconds > 0
        and last_spend_at is not None
        and now < last_spend_at + limits.cooldown_seconds
    ):
        failed.append((LimitName.COOLDOWN, last_spend_at + limits.cooldown_seconds))
    for name, limit, window in (
        (LimitName.PER_HOUR, limits.images_per_hour, HOUR_S),
        (LimitName.PER_DAY, limits.images_per_day, DAY_S),
    ):
        if limit is None:
            continue
        inside = [s for s in spends if s[0] > now - window]
        if sum(images for _, images in inside) + n > limit:
            failed.append((name, window_retry_at(inside, n, limit, window)))
    if limits.max_queued is not None and queued >= limits.max_queued:
        failed.append((LimitName.MAX_QUEUED, now if limits.max_queued > 0 else math.inf))
    picked = pick_refusal(failed)
    return None if picked is None else Refusal(limit=picked[0], retry_at=picked[1], limits=limits)


def usage(
    limits: Limits,
    spends: Sequence[tuple[float, int]],
    last_spend_at: float | None,
    queued: int,
    now: float,
) -> Usage:
    """What `/usage` shows, from the same inputs as `check` (`spends` covering at least the day)."""
    day = [s for s in spends if s[0] > now - DAY_S]
    hour = [s for s in day if s[0] > now - HOUR_S]
    cooldown_until = None if last_spend_at is None else last_spend_at + limits.cooldown_seconds
    return Usage(
        limits=limits,
        used_last_hour=sum(images for _, images in hour),
        used_last_day=sum(images for _, images in day),
        queued=queued,
        hour_refills_at=hour[0][0] + HOUR_S if hour else None,
        day_refills_at=day[0][0] + DAY_S if day else None,
        cooldown_until=cooldown_until if cooldown_until is not None and cooldown_until > now else None,
    )
