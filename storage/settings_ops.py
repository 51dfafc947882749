"""The `/settings` and `/prefer` operations, each once as a program of SQL for either dialect (the
`storage.ops` style): members' and guilds' prompt defaults and members' macros.

The guild's defaults are the row with user id 0 (Discord ids are never 0). Column names put into
SQL text come only from the fixed `_COLUMNS`, never from input.
"""

from __future__ import annotations

from collections.abc import Mapping

from storage import interface as api
from storage.sql import Execute, Fetch, Program, Row

GUILD_ROW = 0  # the user id of a guild's own defaults
_COLUMNS = {
    "remix": "remix",
    "count": "image_count",
    "aspect": "aspect",
    "negative": "negative",
    "sampler": "sampler",
    "suffix": "suffix",
    "model": "model",
    "models": "offered_models",
    "video_cost": "video_cost",
}
assert tuple(_COLUMNS) == api.SETTING_NAMES
_SELECT = ", ".join(_COLUMNS.values())
_TYPES = {"remix": bool, "count": int, "video_cost": int}


def _settings(row: Row | None) -> api.PromptSettings:
    if row is None:
        return api.PromptSettings()
    values = dict(zip(_COLUMNS, row, strict=True))
    remix = values.pop("remix")
    count, video_cost = values.pop("count"), values.pop("video_cost")
    return api.PromptSettings(
        remix=None if remix is None else bool(remix),
        count=None if count is None else int(count),
        video_cost=None if video_cost is None else int(video_cost),
        **{k: None if v is None else str(v) for k, v in values.items()},
    )


def prompt_settings(guild_id: int, user_id: int) -> Program[api.SettingsView]:
    """The member's row, the guild's row and the member's macros (one snapshot)."""
    rows = yield Fetch(
        f"SELECT user_id, {_SELECT} FROM prompt_settings WHERE guild_id = $1 AND user_id IN ($2, $3)",
        (guild_id, user_id, GUILD_ROW),
    )
    by_user = {int(r[0]): r[1:] for r in rows}
    macros = yield Fetch(
        "SELECT name, value FROM prompt_macros WHERE guild_id = $1 AND user_id = $2 ORDER BY name",
        (guild_id, user_id),
    )
    return api.SettingsView(
        member=_settings(by_user.get(user_id)),
        guild=_settings(by_user.get(GUILD_ROW)),
        macros={str(name): str(value) for name, value in macros},
    )


def _checked(changes: Mapping[str, object | None]) -> list[tuple[str, object | None]]:
    out = []
    for name, value in changes.items():
        if name not in _COLUMNS:
            raise ValueError(f"unknown setting {name!r}; known: {', '.join(api.SETTING_NAMES)}")
        kind = _TYPES.get(name, str)
        if value is not None and (type(value) is not kind):
            raise ValueError(f"setting {name!r} takes {kind.__name__}, not {type(value).__name__}")
        out.append((_COLUMNS[name], value))
    if not out:
        raise ValueError("no settings to change")
    return out


def _user(user_id: int | None) -> int:
    if user_id == GUILD_ROW:
        raise ValueError("user id 0 is the guild's row: pass None for the guild")
    return GUILD_ROW if user_id is None else user_id


def set_prompt_settings(
    guild_id: int, user_id: int | None, changes: Mapping[str, object | None]
) -> Program[int]:
    """Insert the row with the given settings, or set just those on the existing row."""
    pairs, user = _checked(changes), _user(user_id)
    names = [column for column, _ in pairs]
    marks = ", ".join(f"${i}" for i in range(3, len(pairs) + 3))
    updates = ", ".join(f"{n} = EXCLUDED.{n}" for n in names)
    return _one(
        Execute(
            f"INSERT INTO prompt_settings (guild_id, user_id, {', '.join(names)}) VALUES ($1, $2, {marks}) "
            f"ON CONFLICT (guild_id, user_id) DO UPDATE SET {updates}",
            (guild_id, user, *(value for _, value in pairs)),
        )
    )


def reset_prompt_settings(guild_id: int, user_id: int | None) -> Program[int]:
    """Delete the row; how many there were (0 or 1)."""
    sql = "DELETE FROM prompt_settings WHERE guild_id = $1 AND user_id = $2"
    return _one(Execute(sql, (guild_id, _user(user_id))))


def set_macro(guild_id: int, user_id: int, name: str, value: str, limit: int) -> Program[int]:
    """Insert or replace the macro, in one statement that inserts only while the member holds fewer
    than `limit` other macros; 0 when the limit stopped it."""
    if not name or not value:
        raise ValueError("a macro needs a name and a value")
    return _one(
        Execute(
            "INSERT INTO prompt_macros (guild_id, user_id, name, value) SELECT $1, $2, $3, $4 "
            "WHERE (SELECT count(*) FROM prompt_macros WHERE guild_id = $1 AND user_id = $2 "
            "AND name <> $3) < $5 "
            "ON CONFLICT (guild_id, user_id, name) DO UPDATE SET value = EXCLUDED.value",
            (guild_id, _user(user_id), name, value, limit),
        )
    )


def delete_macro(guild_id: int, user_id: int, name: str) -> Program[int]:
    """Delete the macro; 0 if there was none."""
    sql = "DELETE FROM prompt_macros WHERE guild_id = $1 AND user_id = $2 AND name = $3"
    return _one(Execute(sql, (guild_id, _user(user_id), name)))


def _one(step: Execute) -> Program[int]:
    return int((yield step))
