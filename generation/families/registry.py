"""`recognise(pipe)`: the one way to know what a loaded pipeline is; nothing outside
`generation.families` branches on a family."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from generation.families import flux, pixart, qwen_image, sd, sd3
from generation.families.base import Configs, Family, configs_of
from generation.families.generic import generic_family

RECOGNISERS: tuple[Callable[[str, Configs], Family | None], ...] = (
    flux.recognise,
    qwen_image.recognise,
    sd3.recognise,
    pixart.recognise,
    sd.recognise,
)


def recognise(pipe: Any) -> Family:
    """The family of a loaded text-to-image pipeline (the generic one when none claims it)."""
    name, configs = type(pipe).__name__, configs_of(pipe)
    for claims in RECOGNISERS:
        family = claims(name, configs)
        if family is not None:
            return family
    return generic_family(pipe)
