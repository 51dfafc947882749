"""Non-finite generations (NaN or infinite values: black pictures) are never delivered, and weighted
prompts never make them: the window rescale never divides by a near-zero mean."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
import torch

from generation.backends.protocol import GeneratedImage, JobFailed
from generation.pipelines.contract import NonFiniteOutput, StepCallback
from generation.pipelines.engine import DiffusersEngine
from generation.pipelines.prompt_encoding import PromptEncoder, rescale_ratio
from generation.prompts.request import GenerationRequest
from generation.prompts.weights import parse_weights
from generation.scheduling.batch_run import NON_FINITE, BatchRun, Outcome, StepDone
from tests.fixtures_generation import nan_decoding, png_pixels, same_within_rounding, tiny_request

pytest_plugins = ["tests.fixtures_generation"]


def go(_step: int, _total: int, _preview: Any) -> bool:
    return True


# the window rescale --------------------------------------------------------------------------------


def test_a_zero_mean_window_keeps_its_weighted_values_instead_of_dividing_by_zero() -> None:
    embeds = torch.tensor([[[1.0, -1.0], [2.0, -2.0]]])  # mean exactly 0
    weights = torch.tensor([[[1.0], [1.5]]])
    ratio = rescale_ratio(embeds, embeds * weights)
    assert torch.equal(ratio, torch.ones_like(ratio))


def test_a_near_zero_mean_is_no_divisor() -> None:
    embeds = torch.tensor([[[1.0, -1.0 + 1e-7], [2.0, -2.0]]])
    weighted = embeds * torch.tensor([[[1.0], [1.5]]])
    assert float(rescale_ratio(embeds, weighted)) == 1.0


def test_an_ordinary_window_is_rescaled_to_its_unweighted_mean() -> None:
    embeds = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]])
    weighted = embeds * torch.tensor([[[1.0], [2.0]], [[2.0], [2.0]]])
    ratio = rescale_ratio(embeds, weighted)
    assert float((weighted[0] * ratio[0]).mean()) == pytest.approx(float(embeds[0].mean()))
    assert float(ratio[1]) == 1.0  # an all-zero window (0/0)


def test_random_weighted_prompts_give_finite_embeddings_on_tiny(tiny_engine: DiffusersEngine) -> None:
    encoder = PromptEncoder(tiny_engine.model.text2img)
    words = ["fox", "snow", "red", "forest", "night", "a", "tree", "cat"]
    rng = random.Random(7)
    for _ in range(50):
        picked = rng.sample(words, 3)
        weight = f"{rng.uniform(0.5, 1.6):.2f}"
        prompt = f"({picked[0]}:{weight}) [{picked[1]}] \\( {picked[2]}::{rng.randint(1, 3)}"
        embeds = encoder.encode(parse_weights(prompt)[0].fragments, windows=rng.randint(1, 4))
        assert torch.isfinite(embeds).all(), prompt
        assert float(embeds.abs().max()) < 1e3, prompt


def test_weighted_and_four_window_prompts_draw_pictures_not_black(tiny_engine: DiffusersEngine) -> None:
    prompts = ["(fox:1.0)", "(fox)", "a \\( fox", "cat::2 dog::1"]
    requests = [tiny_request(prompt=p, seeds=(i,), prompt_windows=1) for i, p in enumerate(prompts)]
    requests.append(tiny_request(prompt=" ".join(["fox"] * 95), prompt_windows=4))
    for request in requests:
        (images,) = tiny_engine.run_batch([request], [None], go)
        assert png_pixels(images[0].png).std() > 5, request.prompt


# the engine ---------------------------------------------------------------------------------------


def test_a_non_finite_batch_fails_only_the_requests_it_touched(tiny_engine: DiffusersEngine) -> None:
    requests = [tiny_request(seeds=(1, 2)), tiny_request(prompt="a blue fox", seeds=(3,))]
    poisoned = nan_decoding(tiny_engine.model.text2img.vae, images=[1])  # request 0's second image
    with poisoned, pytest.raises(NonFiniteOutput) as raised:
        tiny_engine.run_batch(requests, [None, None], go)
    assert raised.value.failed == {0}
    assert raised.value.results[0] == []
    (kept,) = raised.value.results[1]
    ((alone,),) = tiny_engine.run_batch([requests[1]], [None], go)
    assert same_within_rounding(kept.png, alone.png)  # delivered as it would be alone


def test_a_finite_batch_is_returned_as_before(tiny_engine: DiffusersEngine) -> None:
    (images,) = tiny_engine.run_batch([tiny_request(seeds=(5, 6))], [None], go)
    assert len(images) == 2 and all(png_pixels(i.png).std() > 5 for i in images)


# the batch run ------------------------------------------------------------------------------------


class NonFiniteEngine:
    """Raises `NonFiniteOutput` for the requests whose prompt says "nan"."""

    profile: Any = None

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def max_batch_images(self, request: GenerationRequest) -> int:
        return 8

    def run_batch(
        self,
        requests: Sequence[GenerationRequest],
        sources: Sequence[bytes | None],
        on_step: StepCallback,
        pictures: Mapping[str, bytes] | None = None,
    ) -> list[list[GeneratedImage]]:
        image = GeneratedImage(png=b"png", seed=1, width=64, height=64)
        results = [[] if "nan" in r.prompt else [image] for r in requests]
        failed = frozenset(i for i, r in enumerate(requests) if "nan" in r.prompt)
        raise NonFiniteOutput(failed, results)


class Members:
    def __init__(self) -> None:
        self.outcomes: dict[int, Outcome] = {}

    def stopped(self) -> bool:
        return False

    def cancelled(self, i: int) -> bool:
        return False

    def watched(self, i: int) -> bool:
        return False

    def report(self, step: StepDone) -> None:
        pass

    def settle(self, i: int, outcome: Outcome) -> None:
        assert i not in self.outcomes
        self.outcomes[i] = outcome


def test_the_batch_run_fails_the_non_finite_jobs_and_delivers_the_rest() -> None:
    members = Members()
    requests = [tiny_request(prompt="nan fox"), tiny_request(prompt="fox"), tiny_request(prompt="nan cat")]
    BatchRun(NonFiniteEngine(), requests, [None] * 3, members, deadline=float("inf"), timeout_s=60).run()
    for i in (0, 2):
        failed = members.outcomes[i]
        assert isinstance(failed, JobFailed) and str(failed) == NON_FINITE
    assert isinstance(members.outcomes[1], tuple) and len(members.outcomes[1]) == 1
