"""MODELS on Ray: each replica keeps an `EnginePool`, and a model's batches go to a replica that
already runs it (Serve's model multiplexing, named per call by the driver). A local Ray cluster
(tests.ray_fixtures) with two replicas, each running `tiny` and the tiny Flux: replicas of two families,
and the tiny image-to-video model as VIDEO_MODEL (loaded on a replica on first use)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import pytest_asyncio

from tests.ray_fixtures import require_ray

require_ray()

from generation.backends.protocol import GenerationResult  # noqa: E402
from generation.backends.ray_app import ReplicaModels  # noqa: E402
from generation.backends.ray_driver import RayBackend  # noqa: E402
from generation.media.canvas import SizeCap, canvas_size  # noqa: E402
from generation.media.compose import read_parameters  # noqa: E402
from generation.media.video import probe_mp4  # noqa: E402
from generation.model_set import ModelSet  # noqa: E402
from generation.prompts.edits import Direction, EditKind, edit_spec  # noqa: E402
from generation.prompts.references import Reference, ReferenceKind  # noqa: E402
from generation.prompts.request import animate_of, edit_of, instruct_of  # noqa: E402
from generation.prompts.video import Motion  # noqa: E402
from generation.scheduling.job_state import MemoryImages  # noqa: E402
from tests.fixtures_generation import tiny_request, tiny_source_png  # noqa: E402

pytestmark = pytest.mark.asyncio(loop_scope="module")
IMAGES = MemoryImages()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def backend(ray_cluster: None, tiny_cache_dir: Path) -> AsyncIterator[RayBackend]:
    b = RayBackend(
        "first",
        "cpu",
        replicas=2,
        image_store=IMAGES,
        job_timeout_s=120.0,
        cache_dir=tiny_cache_dir,
        app_name="imagine-models-test",
        # Room for a second call on a replica: the next batch is routed while the last one's call is
        # still closing on its replica; with one slot Serve would fall back to the other replica.
        max_ongoing=2,
        models=ReplicaModels(
            ModelSet.parse("first=tiny,second=tiny-flux"), video_model="tiny-video", edit_model="tiny-kontext"
        ),
    )
    await b.start()
    yield b
    await b.close()


async def run_one(backend: RayBackend, job_id: str, model: str, seed: int) -> tuple[GenerationResult, str]:
    handle = backend.submit(job_id, "alice", tiny_request(model=model, seeds=(seed,)))
    result = await handle.result()
    assert isinstance(result, GenerationResult)
    return result, backend._replica_of[job_id]


async def test_each_models_batches_stay_on_the_replica_that_runs_it(backend: RayBackend) -> None:
    _, second_home = await run_one(backend, "s0", "second", 1)
    _, first_home = await run_one(backend, "f0", "first", 2)
    seen_second = [(await run_one(backend, f"s{i}", "second", 10 + i))[1] for i in range(1, 7)]
    # always the replica that already runs it (by chance alone, six in a row: 1 in 64)
    assert seen_second == [second_home] * 6
    result, _ = await run_one(backend, "s9", "second", 3)
    text = read_parameters(result.images[0].png)
    assert text is not None and "Model: second" in text
    assert first_home  # the first model ran too, on some replica


async def test_the_driver_knows_each_models_family_and_tokenizer_from_a_replica(backend: RayBackend) -> None:
    first, second = backend.catalog["first"], backend.catalog["second"]
    assert (first.profile.features.family, second.profile.features.family) == ("sd", "flux")
    assert (first.profile.token_limit, second.profile.token_limit) == (77, 512)  # Flux counts with T5
    assert second.counter.count_tokens("a red fox") != first.counter.count_tokens("a red fox")


async def test_an_edit_of_a_flux_picture_runs_on_a_flux_replica_at_its_own_size(backend: RayBackend) -> None:
    second = backend.catalog["second"].profile
    digest = IMAGES.add(tiny_source_png(size=(128, 96)))
    spec = edit_spec(EditKind.PAN, direction=Direction.RIGHT)
    size = canvas_size(spec, (128, 96), SizeCap.for_profile(second))
    parent = tiny_request(model="second", width=128, height=96, steps=2, guidance=3.5)
    handle = backend.submit("edit-flux", "alice", edit_of(parent, spec, digest, size, (7, 8)))
    result = await handle.result()
    assert isinstance(result, GenerationResult)
    assert (
        [(i.width, i.height) for i in result.images] == [size, size] and size[0] > 128 and size[0] % 16 == 0
    )
    text = read_parameters(result.images[0].png) or ""
    assert "Model: second" in text and f"Action: {spec.describe()}" in text


async def test_a_clip_runs_on_a_replica_that_loads_the_video_model_on_first_use(backend: RayBackend) -> None:
    assert "tiny-video" not in backend.catalog  # asked for by Animate, never by `--model`
    digest = IMAGES.add(tiny_source_png(size=(96, 64)))
    parent = tiny_request(model="first", width=96, height=64)
    request = animate_of(
        parent, source_hash=digest, size=(96, 64), motion=Motion.LOW, video_model="tiny-video", seed=3
    )
    result = await backend.submit("clip", "alice", request).result()
    assert isinstance(result, GenerationResult)
    [clip] = result.images
    info = probe_mp4(clip.png)
    assert clip.media == "mp4" and (info.codec, info.frames) == ("h264", 9)
    assert (info.width, info.height) == (clip.width, clip.height) and info.width > info.height


async def test_an_edit_in_words_runs_on_a_replica_that_loads_the_edit_model_on_first_use(
    backend: RayBackend,
) -> None:
    assert "tiny-kontext" not in backend.catalog  # asked for by Edit, never by `--model`
    digest = IMAGES.add(tiny_source_png(size=(72, 48)))
    request = instruct_of(
        source_hash=digest, size=(72, 48), instruction="make it winter", edit_model="tiny-kontext", seed=5
    )
    result = await backend.submit("edit-words", "alice", request).result()
    assert isinstance(result, GenerationResult)
    [image] = result.images
    assert (image.width, image.height) == (72, 48)  # the picture's size, though Kontext draws at 16s
    text = read_parameters(image.png) or ""
    assert text.startswith("make it winter\n") and "Model: tiny-kontext" in text


async def test_reference_pictures_travel_with_the_batch_to_a_replica(backend: RayBackend) -> None:
    plain_request = tiny_request(model="first", seeds=(21,))
    picture = IMAGES.add(tiny_source_png((200, 40, 40)))
    styled_request = replace(
        plain_request, references=(Reference(ReferenceKind.STYLE, 100, ("https://x/p.png",), (picture,)),)
    )
    plain = await backend.submit("plain-ref", "alice", plain_request).result()
    styled = await backend.submit("styled-ref", "alice", styled_request).result()
    assert isinstance(plain, GenerationResult) and isinstance(styled, GenerationResult)
    assert plain.images[0].png != styled.images[0].png
    assert f"References: style ×100: {picture[:10]}" in (read_parameters(styled.images[0].png) or "")
