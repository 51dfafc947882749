"""Weighted and long prompts → text embeddings, as AUTOMATIC1111 encodes them (our own ~80 lines
rather than compel: A1111's emphasis, Midjourney's negative parts and padding every prompt of a batch
to one window count map straight onto the tokenizer and text encoder, with no syntax to translate).

A prompt's tokens (from `generation.prompts.weights`, syntax removed) are cut into windows of 75,
each encoded as begin + 75 + end (77 tokens); each token's embedding is multiplied by its weight,
then the window is rescaled to its unweighted mean (`rescale_ratio`: never by a near-zero mean).
Windows are concatenated. Multi-prompt parts are encoded apart and averaged by their positive
weights; a part with a negative weight joins the negative prompt at |weight| / (mean positive weight).
SD 1.x/2.x text encoders (one CLIP); SDXL and Flux go through compel (`prompt_compel`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch

from generation.families.base import Family
from generation.prompts.request import GenerationRequest
from generation.prompts.weights import Fragment, weighted_sides

WINDOW = 75


MAX_RESCALE = 4.0  # a window's mean is restored only by a factor within 1/4..4


def rescale_ratio(embeds: torch.Tensor, weighted: torch.Tensor) -> torch.Tensor:
    """Per window (dim 0), the factor that gives `weighted` the mean of `embeds`, as A1111 rescales.

    A mean near zero (a text encoder whose outputs are centred, as `tiny`'s layer norm makes them)
    is no divisor: 0/0 or x/1e-9 would blow the window up into a NaN or black picture. Such a window
    (a factor not finite or outside 1/MAX_RESCALE..MAX_RESCALE) keeps its weighted values."""
    before = embeds.mean(dim=(1, 2), keepdim=True)
    after = weighted.mean(dim=(1, 2), keepdim=True)
    ratio = before / after
    trusted = torch.isfinite(ratio) & (ratio >= 1 / MAX_RESCALE) & (ratio <= MAX_RESCALE)
    return torch.where(trusted, ratio, torch.ones_like(ratio))


class PromptEncoder:
    """Encodes a batch's prompts over `pipe`'s tokenizer and text encoder."""

    def __init__(self, pipe: Any) -> None:
        self.tokenizer = pipe.tokenizer
        self.text_encoder = pipe.text_encoder

    def tokens(self, fragments: Sequence[Fragment]) -> tuple[list[int], list[float]]:
        """Token ids (no begin/end) and each one's weight."""
        ids: list[int] = []
        weights: list[float] = []
        for fragment in fragments:
            found = self.tokenizer(fragment.text, add_special_tokens=False, truncation=False)["input_ids"]
            ids += found
            weights += [fragment.weight] * len(found)
        return ids, weights

    @torch.no_grad()
    def encode(self, fragments: Sequence[Fragment], windows: int = 1) -> torch.Tensor:
        """(1, 77 × max(windows, needed), dim): the fragments' windows, weighted, concatenated."""
        ids, weights = self.tokens(fragments)
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        count = max(windows, -(-len(ids) // WINDOW), 1)
        chunks, chunk_weights = [], []
        for k in range(count):
            part, part_w = ids[k * WINDOW : (k + 1) * WINDOW], weights[k * WINDOW : (k + 1) * WINDOW]
            fill = WINDOW - len(part)
            chunks.append([tok.bos_token_id, *part, tok.eos_token_id] + [pad] * fill)
            chunk_weights.append([1.0, *part_w, 1.0] + [1.0] * fill)
        device = self.text_encoder.device
        embeds = self.text_encoder(torch.tensor(chunks, device=device))[0]  # (windows, 77, dim)
        w = torch.tensor(chunk_weights, device=device, dtype=embeds.dtype).unsqueeze(-1)
        weighted = embeds * w
        weighted = weighted * rescale_ratio(embeds, weighted)
        out: torch.Tensor = weighted.reshape(1, -1, embeds.shape[-1])
        return out

    def request_embeddings(self, request: GenerationRequest) -> tuple[torch.Tensor, torch.Tensor]:
        """The prompt's and negative prompt's embeddings (multi-prompt parts padded to one length)."""
        positive, negative = weighted_sides(request.prompt, request.negative_prompt)
        total = sum(p.weight for p in positive)
        windows = request.prompt_windows
        encoded = [self.encode(p.fragments, windows) for p in positive]
        width = max(e.shape[1] for e in encoded)
        prompt = sum((p.weight / total) * self._pad(e, width) for p, e in zip(positive, encoded, strict=True))
        assert isinstance(prompt, torch.Tensor)
        return prompt, self.encode(negative, windows)

    def batch(self, requests: Sequence[GenerationRequest]) -> dict[str, torch.Tensor]:
        """`prompt_embeds` and `negative_prompt_embeds` for every image of `requests` (one batch key:
        one window count, so an image is the same alone or in a batch)."""
        prompts, negatives = [], []
        for request in requests:
            prompt, negative = self.request_embeddings(request)
            prompts += [prompt] * request.count
            negatives += [negative] * request.count
        width = max(p.shape[1] for p in prompts + negatives)
        return {
            "prompt_embeds": torch.cat([self._pad(p, width) for p in prompts]),
            "negative_prompt_embeds": torch.cat([self._pad(n, width) for n in negatives]),
        }

    def _pad(self, embeds: torch.Tensor, width: int) -> torch.Tensor:
        """`embeds` grown to `width` tokens with empty windows (as A1111 pads the shorter prompt)."""
        missing = (width - embeds.shape[1]) // (WINDOW + 2)
        if missing <= 0:
            return embeds
        return torch.cat([embeds, self.encode((), missing).to(embeds.dtype)], dim=1)


class WeightedEncoder(Protocol):
    """Encodes a batch's weighted prompts into the pipeline call's embedding arguments."""

    def batch(self, requests: Sequence[GenerationRequest]) -> dict[str, torch.Tensor]:
        """The call's `prompt_embeds` (and negative, pooled, …) for every image of `requests`."""
        ...


def prompt_encoder(family: Family, pipe: Any) -> WeightedEncoder | None:
    """The weighted-prompt encoder the family declares (`Family.prompt_encoder`), or None."""
    if family.prompt_encoder is None:
        return None
    if family.prompt_encoder == "windows":
        return PromptEncoder(pipe)
    from generation.pipelines.prompt_compel import CompelEncoder

    return CompelEncoder(pipe, family.prompt_encoder)
