"""Pictures as prompts through the real discord.py client (PRODUCT.md "Pictures as prompts"): `--sref`
with the URL of an earlier result and with `style_image`, `--oref`, a URL on another host refused with
nothing spent and no request made, `/blend` with 2 and with 5 pictures, each PNG naming its references,
and a variation of a referenced result (its pictures from the image store, not fetched again)."""

from __future__ import annotations

import hashlib
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from aiohttp import web
from PIL import Image

from generation.media.compose import read_parameters
from testkit.answers import button_id
from testkit.discord_loopback import Message, Upload
from tests.bot_harness import BotWorld

pytest_plugins = ["tests.fixtures_generation"]
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory, tiny_cache_dir: Path) -> AsyncIterator[BotWorld]:
    from generation.pipelines.loading import load_pipeline

    own = load_pipeline("tiny", "cpu", cache_dir=tiny_cache_dir)  # the adapter changes its UNet
    async with BotWorld.open(tmp_path_factory.mktemp("references"), own) as w:
        await w.start_bot()
        yield w


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def lighthouse(world: BotWorld) -> Message:
    """A plain result: what the referenced jobs below are compared with (same prompt and seed)."""
    return await world.wait_result(world.imagine("a lighthouse --seed 11 --n 1"))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def reference(world: BotWorld) -> Message:
    """An earlier result whose picture is the reference."""
    return await world.wait_result(world.imagine("a stained glass window --seed 12 --n 1"))


def pixels(message: Message) -> np.ndarray[Any, Any]:
    return np.asarray(Image.open(io.BytesIO(message.attachments[0].data)).convert("RGB"), np.int16)


def parameters(message: Message) -> str:
    return read_parameters(message.attachments[0].data) or ""


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:10]


def png(colour: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> bytes:
    buffer = io.BytesIO()
    noise = np.random.default_rng(sum(colour)).integers(0, 60, (size[1], size[0], 3))
    Image.fromarray(np.clip(noise + np.array(colour), 0, 255).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


async def test_sref_with_an_earlier_results_url_takes_its_style(
    world: BotWorld, lighthouse: Message, reference: Message
) -> None:
    url = reference.attachments[0].url
    styled = await world.wait_result(world.imagine(f"a lighthouse --seed 11 --n 1 --sref {url}"))
    assert np.abs(pixels(styled) - pixels(lighthouse)).mean() > 1
    data = reference.attachments[0].data
    assert parameters(styled).splitlines()[-1] == f"References: style ×100: {digest(data)} ({url})"
    again = await world.wait_result(world.imagine(f"a lighthouse --seed 11 --n 1 --sref {url} --sw 0"))
    np.testing.assert_array_equal(pixels(again), pixels(lighthouse))  # weight 0: the plain picture


async def test_style_image_and_oref_and_a_variation_of_the_result(
    world: BotWorld, lighthouse: Message, reference: Message
) -> None:
    attached = png((200, 40, 40))
    rec = world.server.invoke(
        "imagine",
        {"prompt": f"a lighthouse --seed 11 --n 1 --oref {reference.attachments[0].url} --ow 300"},
        attachments={"style_image": Upload("red.png", attached, "image/png")},
        guild=world.guild,
        channel=world.channel,
        member=world.bob,
    )
    both = await world.wait_result(rec)
    line = parameters(both).splitlines()[-1]
    assert line.startswith(f"References: style ×100: {digest(attached)} (http://127.0.0.1:")
    assert f"; subject ×300: {digest(reference.attachments[0].data)} (" in line
    assert np.abs(pixels(both) - pixels(lighthouse)).mean() > 1
    variation = await world.wait_result(world.server.click(both, button_id(both, "V1"), world.bob))
    assert parameters(variation).splitlines()[-1] == line  # its references carried, from the store


async def test_a_url_on_another_host_is_refused_with_nothing_spent_and_no_request_made(
    world: BotWorld,
) -> None:
    seen: list[str] = []

    async def picture(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(body=png((1, 2, 3)), content_type="image/png")

    app = web.Application()
    app.router.add_get("/{name}", picture)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        carol = world.server.add_member(world.guild, "carol2")
        for url in (f"http://127.0.0.1:{port}/x.png", "https://cdn.discordapp.com/attachments/1/2/x.png"):
            rec = world.imagine(f"a lighthouse --sref {url}", member=carol)
            await world.private(rec, "isn't accepted", "use a picture discord serves")
        assert seen == []  # never asked
        assert await world.store.ledger(world.guild.id, carol.id) == []
    finally:
        await runner.cleanup()


async def _blend(world: BotWorld, pictures: list[bytes], **options: Any) -> Message:
    uploads = {f"image{i + 1}": Upload(f"p{i}.png", data, "image/png") for i, data in enumerate(pictures)}
    rec = world.server.invoke(
        "blend", options, attachments=uploads, guild=world.guild, channel=world.channel, member=world.alice
    )
    return await world.wait_result(rec)


async def test_blend_mixes_two_and_five_pictures(world: BotWorld) -> None:
    two = [png((220, 30, 30)), png((30, 30, 220))]
    mixed = await _blend(world, two, dimensions="landscape")
    assert pixels(mixed).shape[1] > pixels(mixed).shape[0]  # 3:2
    line = parameters(mixed).splitlines()[-1]
    assert line.startswith(f"References: blend ×100: {digest(two[0])} (") and f"{digest(two[1])} (" in line
    five = [png((40 * k, 200 - 30 * k, 90)) for k in range(5)]
    mixed5 = await _blend(world, five, prompt="a city at night")
    text = parameters(mixed5)
    assert text.startswith("a city at night\n") and all(digest(p) in text for p in five)
    assert pixels(mixed5).shape[0] == pixels(mixed5).shape[1]  # square by default


async def test_remix_prefills_the_references_and_keeps_or_replaces_them(
    world: BotWorld, reference: Message
) -> None:
    url = reference.attachments[0].url
    referenced = await world.wait_result(world.imagine(f"a harbour --seed 5 --n 1 --sref {url} --sw 250"))
    erin = world.server.add_member(world.guild, "erin2")
    await world.store.set_prompt_settings(world.guild.id, erin.id, {"remix": True})
    click = world.server.click(referenced, button_id(referenced, "V1"), erin)
    await click.wait_final(lambda r: r.acknowledged, timeout=60)
    assert click.modal is not None
    [label] = click.modal["components"]
    prefill = label["component"]["value"]
    assert f"--sref {url} --sw 250" in prefill
    kept = await world.wait_result(
        world.server.submit_modal(click, {"prompt": prefill.replace("a harbour", "a quiet harbour")}, erin)
    )
    assert parameters(kept).splitlines()[-1] == parameters(referenced).splitlines()[-1]
    other = world.server.click(referenced, button_id(referenced, "V1"), erin)
    await other.wait_final(lambda r: r.acknowledged, timeout=60)
    swapped = prefill.replace(f"--sref {url} --sw 250", f"--oref {world.server.url}/nowhere.png")
    rec = world.server.submit_modal(other, {"prompt": swapped}, erin)
    await world.private(rec, "404")  # a new URL is fetched (and refused here): nothing spent for it
    assert len(await world.store.ledger(world.guild.id, erin.id)) == 1
