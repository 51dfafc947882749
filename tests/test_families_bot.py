"""Mixed families through the real discord.py client: a server offering tiny Flux, tiny SD 3 and `tiny`
(MODELS), `--model` each with results whose parameters are right for that model, `/models` listing
the three with what each takes, a flag one family refuses refused privately, and the buttons that
follow the model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from PIL import Image

from generation.media.compose import read_parameters
from tests.bot_harness import BotWorld

pytest_plugins = ["tests.fixtures_generation"]
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory, tiny_model: Any) -> AsyncIterator[BotWorld]:
    async with BotWorld.open(tmp_path_factory.mktemp("families"), tiny_model) as w:
        w.extra_settings = {
            "models": "sd=tiny,flux=tiny-flux,sd3=tiny-sd3,pixart=tiny-pixart,qedit=tiny-qwen-edit-plus"
        }
        await w.start_bot()
        yield w


def size_and_parameters(data: bytes) -> tuple[tuple[int, int], str]:
    import io

    with Image.open(io.BytesIO(data)) as image:
        return image.size, read_parameters(data) or ""


def labels(components: list[Any]) -> list[str]:
    return [c.get("label") or c.get("emoji", {}).get("name") for row in components for c in row["components"]]


@pytest.mark.parametrize(
    ("model", "size", "sampler"),
    [("sd", 64, "Euler"), ("flux", 128, "Euler"), ("sd3", 64, "Euler"), ("pixart", 256, "DPM++ 2M")],
)
async def test_each_model_draws_at_its_own_size_with_its_own_parameters(
    world: BotWorld, model: str, size: int, sampler: str
) -> None:
    result = await world.wait_result(world.imagine(f"a lighthouse --model {model} --n 1 --seed 3"))
    (got, text) = size_and_parameters(result.attachments[0].data)
    assert got == (size, size)
    assert f"Model: {model}" in text and f"Size: {size}x{size}" in text and f"Sampler: {sampler}" in text


async def test_a_flag_the_family_cannot_carry_is_refused_privately_naming_the_model(world: BotWorld) -> None:
    refused = await world.wait_ephemeral(world.imagine("a lighthouse --model flux --tile"))
    assert "`--tile` doesn't work on `flux` (Flux.1)" in refused.content
    words = await world.wait_ephemeral(world.imagine("a lighthouse --model qedit"))  # an edit-only model
    assert "`qedit` (Qwen-Image-Edit-Plus) only edits pictures" in words.content
    assert "`image`" in words.content and "`--oref`" in words.content and "`/blend`" in words.content
    sampler = await world.wait_ephemeral(world.imagine("a lighthouse --model flux --sampler ddim"))
    assert "it takes euler, euler_a, dpmpp_2m, unipc" in sampler.content
    ok = await world.wait_result(world.imagine("a lighthouse --model sd --tile --n 1"))
    assert "Model: sd" in (read_parameters(ok.attachments[0].data) or "")


async def test_models_lists_every_offered_model_with_what_it_takes(world: BotWorld) -> None:
    rec = world.server.invoke("models", {}, guild=world.guild, channel=world.channel, member=world.bob)
    answer = await world.wait_ephemeral(rec)
    text = answer.content
    for line in ("**sd** (default): Stable Diffusion 1.x/2.x, 64×64", "**flux**: Flux.1, 128×128", "**sd3**"):
        assert line in text, text
    assert "**pixart**: PixArt, 256×256" in text
    edit = text.split("**qedit**")[1]
    assert edit.startswith(": Qwen-Image-Edit-Plus, 1024×1024") and "edits pictures only" in edit
    assert "✓ --oref" in edit and "– --sref" in edit
    flux = text.split("**flux**")[1].split("**sd3**")[0]
    assert "– --tile" in flux and "✓ --no" in flux and "✓ --cfg" in flux and "✓ image" in flux


async def test_a_model_without_image_to_image_has_no_u_or_v_buttons(world: BotWorld) -> None:
    pixart = await world.wait_result(world.imagine("a lighthouse --model pixart --n 2"))
    assert not any(label and label[0] in "UV" and label[1:].isdigit() for label in labels(pixart.components))
    assert "🔄" in labels(pixart.components)
    flux = await world.wait_result(world.imagine("a lighthouse --model flux --n 1"))
    assert "U1" in labels(flux.components) and "V1" in labels(flux.components)
    assert "Vary (Subtle)" in labels(flux.components)  # Flux runs the edit loop too


def button(message: Any, label: str) -> str:
    return next(
        str(c["custom_id"])
        for row in message.components
        for c in row["components"]
        if (c.get("label") or c.get("emoji", {}).get("name")) == label
    )


@pytest.mark.parametrize("label", ["Vary (Subtle)", "Zoom Out 2x", "➡️"])
async def test_the_edit_loop_runs_on_a_flux_picture_through_the_client(world: BotWorld, label: str) -> None:
    flux = await world.wait_result(world.imagine("a harbour --model flux --n 1 --ar 3:2 --seed 4"))
    (width, height), _ = size_and_parameters(flux.attachments[0].data)
    edited = await world.wait_result(world.server.click(flux, button(flux, label), world.alice))
    (got, text) = size_and_parameters(edited.attachments[0].data)
    assert "Model: flux" in text and "Action: " in text
    assert got[0] % 16 == 0 and got[1] % 16 == 0  # Flux's size step
    if label != "➡️":
        assert got == (width, height)
    else:
        assert got[0] > width  # the canvas grew to the right
