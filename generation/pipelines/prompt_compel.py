"""Weighted and long prompts on SDXL and Flux through compel (its `Compel` encoders, set up as its
`CompelForSDXL` and `CompelForFlux` set them up: both CLIPs' penultimate states and the second's pooled
output on SDXL; CLIP's pooled output and T5's states on Flux).

The project's own parse (`generation.prompts.weights`: A1111 emphasis and `::` multi-prompts) is handed
to compel as its parsed objects (`FlattenedPrompt` of weighted `Fragment`s, a `Blend` of the positive
parts), never as compel's text syntax, so nothing a member types is read twice in two grammars. A
part with a negative weight joins the negative prompt as in `prompt_encoding.PromptEncoder`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from compel import Compel, ReturnedEmbeddingsType
from compel.prompt_parser import Blend, Conjunction, FlattenedPrompt
from compel.prompt_parser import Fragment as CompelFragment

from generation.prompts.request import GenerationRequest
from generation.prompts.weights import Fragment, plain_text, weighted_sides


def _flattened(fragments: Sequence[Fragment]) -> FlattenedPrompt:
    return FlattenedPrompt([CompelFragment(f.text, f.weight) for f in fragments] or [CompelFragment("", 1.0)])


def conjunctions(request: GenerationRequest) -> tuple[Conjunction, Conjunction]:
    """The request's prompt (positive parts blended by weight) and negative prompt as compel's objects."""
    positive, negative = weighted_sides(request.prompt, request.negative_prompt)
    if len(positive) == 1:
        prompt: Blend | FlattenedPrompt = _flattened(positive[0].fragments)
    else:
        prompt = Blend([_flattened(p.fragments) for p in positive], [p.weight for p in positive])
    return Conjunction([prompt]), Conjunction([_flattened(negative)])


def _plain(request: GenerationRequest) -> tuple[str, str]:
    """The texts the pooled embeddings are taken from (compel pools the unweighted text)."""
    return plain_text(request.prompt), plain_text(request.negative_prompt)


class CompelEncoder:
    """A batch's prompt embeddings for SDXL (`kind="sdxl"`) or Flux (`kind="flux"`)."""

    def __init__(self, pipe: Any, kind: str) -> None:
        self.kind = kind
        if kind == "sdxl":
            states = ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED
            self.first = Compel(
                pipe.tokenizer,
                pipe.text_encoder,
                returned_embeddings_type=states,
                truncate_long_prompts=False,
            )
            self.second = Compel(
                pipe.tokenizer_2,
                pipe.text_encoder_2,
                returned_embeddings_type=states,
                truncate_long_prompts=False,
            )
        else:
            pooled = ReturnedEmbeddingsType.POOLED
            self.first = Compel(pipe.tokenizer, pipe.text_encoder, returned_embeddings_type=pooled)
            self.second = Compel(pipe.tokenizer_2, pipe.text_encoder_2)
        for compel in (self.first, self.second):
            compel.disable_no_weights_bypass()

    @torch.no_grad()
    def batch(self, requests: Sequence[GenerationRequest]) -> dict[str, torch.Tensor]:
        """The pipeline call's embedding arguments for every image of `requests` (one batch key: the
        same window count, so an image is the same alone or in a batch)."""
        out: dict[str, list[torch.Tensor]] = {name: [] for name in _ARGUMENTS}
        for request in requests:
            prompt, negative = conjunctions(request)
            plain, plain_negative = _plain(request)
            encoded = (*self._encode(prompt, plain), *self._encode(negative, plain_negative))
            for name, tensor in zip(_ARGUMENTS, encoded, strict=True):
                out[name] += [tensor] * request.count
        states = self._padded(out["prompt_embeds"] + out["negative_prompt_embeds"])
        images = len(out["prompt_embeds"])
        out["prompt_embeds"], out["negative_prompt_embeds"] = states[:images], states[images:]
        return {name: torch.cat(tensors) for name, tensors in out.items()}

    def _encode(self, conjunction: Conjunction, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        """One prompt's token states and pooled vector."""
        if self.kind == "sdxl":
            left = self.first.build_conditioning_tensor_for_conjunction(conjunction)[0]
            right = self.second.build_conditioning_tensor_for_conjunction(conjunction)[0]
            pooled = self.second.conditioning_provider.get_pooled_embeddings([text])
            return torch.cat([left, right], dim=-1), pooled
        pooled = self.first.build_conditioning_tensor_for_conjunction(conjunction)[0]
        state = self.second.build_conditioning_tensor_for_conjunction(conjunction)[0]
        return state, pooled

    def _padded(self, states: list[torch.Tensor]) -> list[torch.Tensor]:
        """Every state grown to the longest with empty-prompt windows (as A1111 pads the shorter)."""
        width = max(state.shape[1] for state in states)
        if all(state.shape[1] == width for state in states):
            return states
        empty = self._encode(Conjunction([_flattened([])]), "")[0]
        out = []
        for state in states:
            missing = (width - state.shape[1]) // empty.shape[1]
            out.append(torch.cat([state, empty.repeat(1, missing, 1)], dim=1) if missing else state)
        return out


_ARGUMENTS = (
    "prompt_embeds",
    "pooled_prompt_embeds",
    "negative_prompt_embeds",
    "negative_pooled_prompt_embeds",
)
