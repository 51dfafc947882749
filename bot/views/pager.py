"""Lists that page (macros, blocked words, `/queue`, `/loras`): page 1 privately, with `Previous` and
`Next` when there are more. The buttons' custom ids, `page:<list>:<owner>:<page>:<p|n>`, carry all a
click needs, so they work after a restart: the click re-reads the list for its owner and shows that
page in place. Every list is one `PagedList`; nothing here knows what a list holds."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import discord

from bot.formatting import pages
from bot.services import Services

Interaction = discord.Interaction[Any]
NAME_PATTERN = r"[a-z]{1,12}"
PAGE_TEMPLATE = (
    rf"page:(?P<list>{NAME_PATTERN}):(?P<owner>[0-9]{{1,20}}):(?P<page>[0-9]{{1,5}}):(?P<step>[pn])"
)
"""A page button's custom id: which list, whose, the page it shows, and p(revious) or n(ext)."""
PREVIOUS, NEXT = "Previous", "Next"


@dataclass(frozen=True)
class Listing:
    """A list's text: `head` lines, the `items` (joined by `sep`), `tail` lines."""

    head: Sequence[str]
    items: Sequence[str] = ()
    tail: Sequence[str] = ()
    sep: str = "\n"

    def pages(self) -> list[str]:
        """Its messages: one when it all fits, else pages that hold every item once."""
        return pages(self.head, self.items, self.tail, sep=self.sep)


Reader = Callable[[Services, Interaction], Awaitable[Listing]]
"""The list as the interaction's member sees it now (may raise a refusal)."""
Reporter = Callable[[Interaction, Exception], Awaitable[None]]
"""How a click's error is answered (`bot.commands.errors.report_error`)."""

_LISTS: dict[str, PagedList] = {}


@dataclass(frozen=True)
class PagedList:
    """A list that pages, known to the buttons by `name` (registered on creation)."""

    name: str
    read: Reader
    report: Reporter

    def __post_init__(self) -> None:
        if not re.fullmatch(NAME_PATTERN, self.name):
            raise ValueError(f"a list's name must match {NAME_PATTERN}: {self.name!r}")
        _LISTS[self.name] = self

    async def send(self, services: Services, interaction: Interaction) -> None:
        """Page 1 of the member's list, privately (the answer, or a followup after a defer)."""
        text, view = self.page(await self.read(services, interaction), interaction.user.id, 1)
        shown = view or discord.utils.MISSING
        if interaction.response.is_done():
            await interaction.followup.send(text, view=shown, ephemeral=True)
        else:
            await interaction.response.send_message(text, view=shown, ephemeral=True)

    def page(self, listing: Listing, owner: int, number: int) -> tuple[str, discord.ui.View | None]:
        """Page `number` (kept within the pages there are now) and its buttons (None: one page)."""
        texts = listing.pages()
        number = min(max(number, 1), len(texts))
        if len(texts) == 1:
            return texts[0], None
        view = discord.ui.View(timeout=None)
        view.add_item(PageButton(self.name, owner, number - 1, "p", disabled=number == 1))
        view.add_item(PageButton(self.name, owner, number + 1, "n", disabled=number == len(texts)))
        return texts[number - 1], view


class PageButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=PAGE_TEMPLATE):
    """`Previous` or `Next` under a paged list: shows page `page` of list `name` to its `owner`."""

    def __init__(self, name: str, owner: int, page: int, step: str, *, disabled: bool = False) -> None:
        super().__init__(
            discord.ui.Button(
                label=PREVIOUS if step == "p" else NEXT,
                style=discord.ButtonStyle.secondary,
                custom_id=f"page:{name}:{owner}:{page}:{step}",
                disabled=disabled,
            )
        )
        self.name, self.owner, self.page = name, owner, page

    @classmethod
    async def from_custom_id(
        cls, interaction: Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> PageButton:
        return cls(match["list"], int(match["owner"]), int(match["page"]), match["step"])

    async def callback(self, interaction: Interaction) -> None:
        paged = _LISTS.get(self.name)
        if paged is None:
            await interaction.response.send_message(
                "That button isn't one I can act on any more.", ephemeral=True
            )
            return
        if interaction.user.id != self.owner:
            await interaction.response.send_message("This list isn't yours.", ephemeral=True)
            return
        try:
            services: Services = interaction.client.services
            listing = await paged.read(services, interaction)
        except Exception as exc:
            await paged.report(interaction, exc)
            return
        text, view = paged.page(listing, self.owner, self.page)
        await interaction.response.edit_message(content=text, view=view)
