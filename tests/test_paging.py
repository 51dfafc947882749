"""Cut and paged lists (issue 23, point 6): `bot.formatting.pages` and the pager's buttons, pure."""

from __future__ import annotations

import re
from typing import Any

from bot.commands.admin import blocked_listing
from bot.commands.prefer import macros_listing
from bot.formatting import MESSAGE_LIMIT, fit, pages
from bot.views.pager import NEXT, PAGE_TEMPLATE, PREVIOUS, Listing, PagedList
from generation.prompts.grammar import MAX_MACROS


def _items_of(page: str, head: list[str], sep: str = "\n") -> list[str]:
    """The items a page shows: its lines between the head and the "Page k of n" line."""
    body = page.split("\n")[len(head) : -1]
    assert page.split("\n")[-1].startswith("-# Page ")
    return "\n".join(body).split(sep)


def test_a_long_list_pages_every_item_once_without_a_cut() -> None:
    items = [f"• `{i:04d}`: position {i}" for i in range(500)]
    head = ["**500** job(s) running or waiting."]
    assert "… and " in fit(head, items)  # one message has to cut it
    texts = pages(head, items)
    assert len(texts) > 1
    assert all(len(t) <= MESSAGE_LIMIT and t.startswith(head[0]) for t in texts)
    assert not any("… and" in t for t in texts)
    assert [t.split("\n")[-1] for t in texts] == [
        f"-# Page {k} of {len(texts)}" for k in range(1, len(texts) + 1)
    ]
    assert [item for t in texts for item in _items_of(t, head)] == items


def test_a_short_list_is_one_page_as_before() -> None:
    assert pages(["a"], ["b", "c"], ["d"]) == [fit(["a"], ["b", "c"], ["d"])] == ["a\nb\nc\nd"]
    assert pages(["Nothing is blocked."], []) == ["Nothing is blocked."]
    assert len(pages(["x" * 3000], [])[0]) == MESSAGE_LIMIT  # a head too long is still cut to fit


def test_pages_join_with_the_separator_and_cut_only_an_item_too_long_for_a_page() -> None:
    words = [f"“word{i}”" for i in range(400)]
    texts = pages(["Blocked (400):"], words, sep=", ", limit=300)
    assert all(len(t) <= 300 for t in texts)
    assert [w for t in texts for w in _items_of(t, ["Blocked (400):"], ", ")] == words

    texts = pages(["head"], ["short", "y" * 500, "last"], limit=100)
    assert len(texts) == 3 and all(len(t) <= 100 for t in texts)
    assert _items_of(texts[0], ["head"]) == ["short"] and _items_of(texts[2], ["head"]) == ["last"]
    (long,) = _items_of(texts[1], ["head"])
    assert long.startswith("yyy") and long.endswith("…")


def test_long_macros_and_blocked_words_page_in_full() -> None:
    macros = {f"m{i:02d}": f"{i:02d} " + "golden hour, 35mm film, " * 16 for i in range(MAX_MACROS)}
    texts = macros_listing(macros).pages()
    assert len(texts) > 1 and all(len(t) <= MESSAGE_LIMIT for t in texts)
    assert all(t.startswith(f"**Your macros** ({MAX_MACROS} of {MAX_MACROS})") for t in texts)
    shown = [line for t in texts for line in t.split("\n") if line.startswith("`--")]
    assert [line.split("`")[1] for line in shown] == [f"--{name}" for name in macros]
    assert not any(t.endswith("…") for t in texts)  # the old list ended in a bare "…"

    blocked = blocked_listing([f"phrase number {i}" for i in range(300)]).pages()
    assert len(blocked) > 1 and all("… and" not in t for t in blocked)
    assert sum(t.count("“") for t in blocked) == 300
    assert blocked_listing([]).pages() == ["Nothing is blocked."]


async def _no_read(services: Any, interaction: Any) -> Listing:
    raise AssertionError("not read in this test")


async def _no_report(interaction: Any, error: Exception) -> None:
    raise AssertionError("not reported in this test")


def _buttons(view: Any) -> list[tuple[str, bool, str]]:
    return [(item.item.label, item.item.disabled, item.item.custom_id) for item in view.children]


def test_the_page_buttons_say_where_they_lead_and_fit_discords_rules() -> None:
    paged = PagedList("testlist", _no_read, _no_report)
    listing = Listing(["head"], [f"item {i} " + "x" * 300 for i in range(30)])
    count = len(listing.pages())
    owner = 123456789012345678

    text, view = paged.page(listing, owner, 1)
    assert text == listing.pages()[0] and view is not None
    assert _buttons(view) == [
        (PREVIOUS, True, f"page:testlist:{owner}:0:p"),
        (NEXT, False, f"page:testlist:{owner}:2:n"),
    ]
    text, view = paged.page(listing, owner, 99)  # past the end (the list shrank): its last page
    assert text == listing.pages()[-1] and view is not None
    assert [disabled for _, disabled, _ in _buttons(view)] == [False, True]
    assert _buttons(view)[0][2] == f"page:testlist:{owner}:{count - 1}:p"
    for _, _, custom_id in _buttons(view):
        assert len(custom_id) <= 100 and re.fullmatch(PAGE_TEMPLATE, custom_id)

    text, view = paged.page(Listing(["head"], ["one"]), owner, 2)
    assert (text, view) == ("head\none", None)  # one page: no buttons
