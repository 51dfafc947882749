"""Weights, token windows, samplers, --tile, --stop and --chaos on the real tiny pipeline (CPU)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch

from generation.media.compose import read_parameters
from generation.pipelines.call_options import circular_padding
from generation.pipelines.contract import PreviewFn
from generation.pipelines.engine import DiffusersEngine
from generation.pipelines.prompt_encoding import WINDOW, PromptEncoder
from generation.prompts.request import GenerationRequest
from generation.prompts.samplers import SAMPLER_LABELS, SAMPLER_NAMES
from generation.prompts.weights import Fragment, parse_emphasis
from tests.fixtures_generation import png_pixels, same_within_rounding, tiny_request

pytest_plugins = ["tests.fixtures_generation"]


def run(engine: DiffusersEngine, *requests: GenerationRequest, steps: list[int] | None = None) -> list[bytes]:
    def on_step(step: int, total: int, _preview: PreviewFn) -> bool:
        if steps is not None:
            steps.append(step)
        return True

    out = engine.run_batch(list(requests), [None] * len(requests), on_step)
    return [image.png for images in out for image in images]


def differ(a: bytes, b: bytes) -> float:
    return float(np.abs(png_pixels(a) - png_pixels(b)).mean())


# weights ------------------------------------------------------------------------------------------


def test_the_words_reach_the_tokenizer_without_the_syntax(tiny_engine: DiffusersEngine) -> None:
    encoder = PromptEncoder(tiny_engine.model.text2img)
    ids, weights = encoder.tokens(parse_emphasis(r"a (red:1.5) \(fox\)"))
    plain = tiny_engine.model.tokenizer("a red (fox)", add_special_tokens=False)["input_ids"]
    assert ids == plain
    assert weights == [1.0] + [1.5] * 3 + [1.0] * 5  # CLIP drops spaces: a r e d ( f o x )


def test_a_weight_scales_its_tokens_embeddings_against_the_rest(tiny_engine: DiffusersEngine) -> None:
    encoder = PromptEncoder(tiny_engine.model.text2img)
    plain = encoder.encode([Fragment("a red fox", 1.0)])[0]
    weighted = encoder.encode([Fragment("a ", 1.0), Fragment("red", 2.0), Fragment(" fox", 1.0)])[0]
    ratio = (weighted / plain).mean(dim=-1)  # per token: weight × the window's mean-restoring factor
    red = ratio[2:5].mean()  # tokens 2-4: "r", "e", "d" after begin and "a"
    rest = torch.cat([ratio[:2], ratio[5:]]).mean()
    assert float(red / rest) == pytest.approx(2.0, rel=1e-4)
    # tiny's encoder output is centred (mean ~1e-9): no divisor, so the weights stand as given
    # (test_non_finite checks the rescale where the mean is one)
    assert float((weighted / plain).max()) == pytest.approx(2.0, rel=1e-4)


def test_plain_weights_draw_what_diffusers_own_encoding_draws(tiny_engine: DiffusersEngine) -> None:
    plain = tiny_request(seeds=(3,))
    weighted = replace(plain, prompt="(a red fox in the snow:1)", prompt_windows=1)
    assert same_within_rounding(run(tiny_engine, plain)[0], run(tiny_engine, weighted)[0])
    stronger = replace(weighted, prompt="(a red fox:3)")
    assert differ(run(tiny_engine, plain)[0], run(tiny_engine, stronger)[0]) > 1


def test_a_negative_part_becomes_a_weighted_negative_term(tiny_engine: DiffusersEngine) -> None:
    encoder = PromptEncoder(tiny_engine.model.text2img)
    prompt, negative = encoder.request_embeddings(tiny_request(prompt="cat::2 dog::-1", prompt_windows=1))
    assert torch.allclose(prompt, encoder.encode([Fragment("cat ", 1.0)]), atol=1e-6)
    assert torch.allclose(negative, encoder.encode([Fragment(" dog", 0.5)]), atol=1e-6)
    plain = tiny_request(prompt="cat::2", prompt_windows=1)
    pushed = replace(plain, prompt="cat::2 dog::-1")
    assert differ(run(tiny_engine, plain)[0], run(tiny_engine, pushed)[0]) > 0


# windows ------------------------------------------------------------------------------------------


def test_long_prompts_are_windows_and_words_past_77_matter(tiny_engine: DiffusersEngine) -> None:
    words = "a fox in the snow, " * 12  # 156 tokens on tiny's byte tokenizer (spaces drop): 3 windows
    encoder = PromptEncoder(tiny_engine.model.text2img)
    assert encoder.encode([Fragment(words, 1.0)]).shape[1] == 3 * (WINDOW + 2)
    long = tiny_request(prompt=words, prompt_windows=3, seeds=(5,))
    changed = replace(long, prompt=words.rstrip(", ") + " rain")  # only the last tokens (past 150) change
    first, again, other = run(tiny_engine, long)[0], run(tiny_engine, long)[0], run(tiny_engine, changed)[0]
    assert first == again
    assert differ(first, other) > 0
    # a short prompt of three windows (its batch key) beside the long one: each as it is alone
    short = replace(long, prompt="(fox:1.2)", seeds=(6,))
    batched = run(tiny_engine, long, short)
    assert same_within_rounding(batched[0], first)
    assert same_within_rounding(batched[1], run(tiny_engine, short)[0])


# samplers -----------------------------------------------------------------------------------------


def test_every_sampler_runs_and_two_differ_without_a_reload(tiny_engine: DiffusersEngine) -> None:
    pipe = tiny_engine.model.text2img
    own, unet = pipe.scheduler, pipe.unet
    pngs = {}
    for name in SAMPLER_NAMES:
        (png,) = run(tiny_engine, tiny_request(sampler=name, seeds=(7,)))
        pngs[name] = png
        assert f"Sampler: {SAMPLER_LABELS[name]}" in (read_parameters(png) or "")
        assert pipe.scheduler is own and pipe.unet is unet  # swapped back; nothing reloaded
    assert differ(pngs["euler"], pngs["ddim"]) > 0
    assert differ(pngs["dpmpp_2m"], pngs["dpmpp_2m_karras"]) > 0
    own_png = run(tiny_engine, tiny_request())[0]
    assert "Sampler: Euler," in (read_parameters(own_png) or "")  # the model's own


# tile, stop, chaos --------------------------------------------------------------------------------


def _edge_and_neighbour(png: bytes) -> tuple[float, float]:
    px = png_pixels(png).astype(np.float64)
    edge = np.abs(px[:, 0] - px[:, -1]).mean() + np.abs(px[0] - px[-1]).mean()
    inner = np.abs(np.diff(px, axis=1)).mean() + np.abs(np.diff(px, axis=0)).mean()
    return float(edge), float(inner)


def test_a_tiled_picture_wraps_at_its_edges(tiny_engine: DiffusersEngine) -> None:
    pipe = tiny_engine.model.text2img
    tiled = [run(tiny_engine, tiny_request(tile=True, seeds=(s,)))[0] for s in range(4)]
    edge, inner = np.mean([_edge_and_neighbour(p) for p in tiled], axis=0)
    assert edge < 1.2 * inner  # the wrap from the last column to the first is like a neighbouring one
    assert "Tiling: True" in (read_parameters(tiled[0]) or "")
    modes = {c.padding_mode for c in pipe.unet.modules() if isinstance(c, torch.nn.Conv2d)}
    assert modes == {"zeros"}  # restored after the call
    assert differ(tiled[0], run(tiny_engine, tiny_request(seeds=(0,)))[0]) > 0


def test_tiling_makes_the_picture_wrap_around_exactly(tiny_model: Any) -> None:
    """Edges that wrap make the whole network equivariant to a circular shift: noise rolled by 4
    latent pixels draws the same picture rolled by 32 pixels. Without tiling the edges differ."""
    pipe = tiny_model.text2img
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))

    def draw(latents: torch.Tensor) -> np.ndarray:
        out = pipe("a fox", latents=latents, num_inference_steps=3, output_type="np", height=64, width=64)
        return np.asarray(out.images[0])

    rolled = torch.roll(noise, 4, dims=3)
    with circular_padding(pipe.unet, pipe.vae):
        tiled, tiled_shifted = draw(noise), draw(rolled)
    assert np.abs(np.roll(tiled, 32, axis=1) - tiled_shifted).max() < 1e-4
    plain, plain_shifted = draw(noise), draw(rolled)
    assert np.abs(np.roll(plain, 32, axis=1) - plain_shifted).max() > 0.05


def test_circular_padding_is_restored_after_an_error(tiny_model: Any) -> None:
    vae = tiny_model.text2img.vae
    with pytest.raises(RuntimeError), circular_padding(vae) as changed:
        assert changed > 0
        raise RuntimeError("boom")
    assert {c.padding_mode for c in vae.modules() if isinstance(c, torch.nn.Conv2d)} == {"zeros"}


def test_stop_ends_early_and_softer(tiny_engine: DiffusersEngine) -> None:
    full_steps: list[int] = []
    stopped_steps: list[int] = []
    full = run(tiny_engine, tiny_request(steps=8, seeds=(2,)), steps=full_steps)[0]
    stopped = run(tiny_engine, tiny_request(steps=8, stop=50, seeds=(2,)), steps=stopped_steps)[0]
    assert full_steps == list(range(1, 9)) and stopped_steps == [1, 2, 3, 4]
    assert differ(full, stopped) > 1


def test_chaos_sets_how_unlike_a_grids_images_are(tiny_engine: DiffusersEngine) -> None:
    def spread(chaos: int | None) -> float:
        pngs = run(tiny_engine, tiny_request(seeds=(10, 11, 12, 13), chaos=chaos))
        return float(np.mean([differ(pngs[0], p) for p in pngs[1:]]))

    independent = run(tiny_engine, tiny_request(seeds=(10, 11, 12, 13)))
    assert run(tiny_engine, tiny_request(seeds=(10, 11, 12, 13), chaos=100)) == independent
    low, middle, high = spread(0), spread(40), spread(100)
    assert low == 0.0 and low < middle < high
