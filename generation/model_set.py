"""`MODELS`: the models a bot offers, by name (pure; no torch).

`MODELS=photo=dreamlike-art/dreamlike-photoreal-2.0,anime=/models/anything,fast=stabilityai/sd-turbo`:
`name=hub-id-or-folder` pairs separated by commas; the first is the default. A pair may name the
model's reference adapter after a space
(`photo=org/sd15 ref=h94/IP-Adapter:models/ip-adapter_sd15.safetensors`, or `ref=none`); without one
its family's default is used. Without `MODELS`, `MODEL_ID` alone is a
one-model set whose name is the id itself (so nothing changes for it)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from generation.families.adapters import parse_adapter

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")


@dataclass(frozen=True)
class ModelChoice:
    """One model: the name members type (`--model photo`) and where it loads from."""

    name: str
    source: str
    reference: str | None = None  # `ref=`: its reference adapter (`generation.families.adapters`)


@dataclass(frozen=True)
class GuildModels:
    """The models one guild offers (in the bot's order) and its default among them."""

    default: str
    offered: tuple[str, ...]


@dataclass(frozen=True)
class ModelSet:
    """The models on offer, the default first."""

    choices: tuple[ModelChoice, ...]

    def __post_init__(self) -> None:
        if not self.choices:
            raise ValueError("a model set needs at least one model")
        names = [c.name for c in self.choices]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must differ: {names}")

    @property
    def default(self) -> ModelChoice:
        """The first model: what a job without `--model` runs on."""
        return self.choices[0]

    @property
    def names(self) -> tuple[str, ...]:
        """The names, the default first."""
        return tuple(c.name for c in self.choices)

    def get(self, name: str) -> ModelChoice | None:
        """The model called `name` (case-insensitive), or None."""
        wanted = name.strip().casefold()
        return next((c for c in self.choices if c.name.casefold() == wanted), None)

    def names_in(self, text: str) -> tuple[str, ...]:
        """The models named in `text` (comma- or space-separated, case-insensitive), in this set's
        order; ValueError naming any that is not here, or when none is named."""
        wanted = [w for w in text.replace(",", " ").split() if w]
        unknown = [w for w in wanted if self.get(w) is None]
        if unknown:
            there = ", ".join(self.names)
            raise ValueError(f"there is no model called {', '.join(unknown)} (there are {there})")
        if not wanted:
            raise ValueError(f"name at least one model (there are {', '.join(self.names)})")
        picked = {w.casefold() for w in wanted}
        return tuple(n for n in self.names if n.casefold() in picked)

    def for_guild(self, default: str | None, offered: str | None) -> GuildModels:
        """A guild's models from its stored settings: `offered` (names, comma-separated; None: all)
        and `default` (None: the bot's default, else the first offered). Names no longer in the set
        are dropped; when none is left the guild is offered every model."""
        names = self.names
        if offered:
            kept = {w.casefold() for w in offered.replace(",", " ").split()}
            names = tuple(n for n in self.names if n.casefold() in kept) or self.names
        chosen = self.get(default) if default else None
        if chosen is not None and chosen.name in names:
            return GuildModels(chosen.name, names)
        first = self.default.name if self.default.name in names else names[0]
        return GuildModels(first, names)

    @classmethod
    def single(cls, model_id: str) -> ModelSet:
        """`MODEL_ID` alone: one model named by its id."""
        return cls((ModelChoice(model_id, model_id),))

    @classmethod
    def parse(cls, text: str) -> ModelSet:
        """`name=source,name=source,…`; ValueError naming the first bad part."""
        choices: list[ModelChoice] = []
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            name, sep, rest = part.partition("=")
            name = name.strip().lower()
            source, *options = rest.split() or [""]
            if not sep or not source:
                raise ValueError(f"MODELS: {part!r} is not name=hub-id-or-folder")
            reference = None
            for option in options:
                key, eq, value = option.partition("=")
                if key != "ref" or not eq or not value:
                    raise ValueError(f"MODELS: {option!r} after {name}'s source is not ref=ADAPTER")
                try:
                    parse_adapter(value)
                except ValueError as exc:
                    raise ValueError(f"MODELS: {name}'s {exc}") from None
                reference = value
            if not _NAME_RE.match(name):
                rule = "1-32 of a-z, 0-9, '_', '.', '-', starting with a letter or digit"
                raise ValueError(f"MODELS: model name {name!r} must be {rule}")
            choices.append(ModelChoice(name, source, reference))
        if not choices:
            raise ValueError("MODELS is empty: give name=hub-id-or-folder pairs, separated by commas")
        return cls(tuple(choices))
