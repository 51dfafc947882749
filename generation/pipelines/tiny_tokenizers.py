"""Tokenizers for the tiny family models (`tiny_families`), made here from small vocabularies.

Made locally because the hub is unreachable (no tokenizer files to download) and the tests need the
real tokenizer classes the pipelines expect: `T5Tokenizer` over a Unigram vocabulary made from a word
list (log-frequency scores, `<pad>` 0, `</s>` 1, `<unk>` 2 as T5 has them) and `Qwen2Tokenizer` over a
byte-level BPE vocabulary. CLIP's is `tiny.byte_tokenizer()`.
"""

from __future__ import annotations

import math
import string
from typing import Any, cast

from transformers import Qwen2Tokenizer, T5Tokenizer

from generation.pipelines.tiny import _bytes_to_unicode

__all__ = ["qwen_tokenizer", "t5_tokenizer"]

# Words every tiny tokenizer knows whole: Qwen's prompt template (so its system prefix is 34 tokens, as
# with the real tokenizer) and common prompt words. Anything else still tokenizes, by pieces.
_QWEN_TEMPLATE_WORDS = (
    "describe the image by detailing color shape size texture quantity text spatial relationships "
    "of objects and background"
)
# Qwen-Image-Edit's template (after the words above): its system prefix is 64 tokens, as with the real one
_QWEN_EDIT_TEMPLATE_WORDS = (
    "key features input then explain how user instruction should alter or modify Generate new that "
    "meets requirements while maintaining consistency original where appropriate ("
)
_PROMPT_WORDS = (
    "a an in on at with of and the to from over under by for is photo picture painting drawing "
    "sketch render portrait landscape cat cats dog dogs horse bird fish dragon robot man woman girl "
    "boy child people face eyes hair hat dress city street house castle tower bridge road car train "
    "boat ship spaceship planet moon sun star stars sky cloud clouds rain snow storm sea ocean beach "
    "river lake mountain mountains hill forest tree trees flower flowers garden field grass desert "
    "island night day morning evening sunset sunrise light lights neon shadow fire water ice stone "
    "wood glass metal gold silver red orange yellow green blue purple pink black white grey brown "
    "dark bright colorful golden old new small big tiny huge tall little beautiful cute happy sad "
    "epic fantasy magic ancient futuristic cyberpunk steampunk realistic detailed highly intricate "
    "cinematic dramatic soft sharp focus lighting style art digital oil watercolor pencil anime "
    "cartoon photograph studio close up wide angle view scene background foreground sitting standing "
    "running flying walking reading wearing holding looking table chair window door room book cup "
    "vase lamp astronaut knight wizard cottage village lighthouse waterfall volcano jungle winter "
    "summer autumn spring masterpiece quality resolution"
)


def _word_list() -> list[str]:
    """The known words, each once, in a fixed order."""
    words: list[str] = []
    for word in f"{_QWEN_TEMPLATE_WORDS} {_PROMPT_WORDS}".split():
        if word not in words:
            words.append(word)
    return words


def t5_tokenizer() -> T5Tokenizer:
    """A T5 tokenizer over a tiny Unigram vocabulary, made locally (no SentencePiece file).

    `<pad>` 0, `</s>` 1, `<unk>` 2 as in T5; then `▁`, printable ASCII characters (alone and after `▁`)
    and whole known words after `▁`, scored by log-frequency so Viterbi prefers whole words. Every
    ASCII text tokenizes; other characters become `<unk>`, as with T5's own vocabulary.
    """
    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0)]
    seen = {piece for piece, _ in pieces}
    characters = [c for c in string.printable if not c.isspace()]
    words = _word_list()
    candidates = [(f"▁{w}", -6.0 - math.log1p(i) / 10) for i, w in enumerate(words)]
    candidates += [(c, -10.0) for c in characters] + [(f"▁{c}", -9.0) for c in characters]
    for piece, score in candidates:
        if piece not in seen:
            seen.add(piece)
            pieces.append((piece, score))
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)


_QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)  # Qwen2.5-VL's, in its order (ids 151643… there; here they follow the tiny vocabulary)


def qwen_tokenizer() -> Qwen2Tokenizer:
    """A Qwen2 tokenizer over a tiny byte-level BPE vocabulary, made locally.

    The 256 byte symbols, then merges that build each known word (after a space, `Ġword`, as Qwen's
    pre-tokenizer splits them) left to right, then Qwen2.5-VL's special tokens (`<|im_start|>`,
    `<|im_end|>`, `<|vision_start|>` …). The pipelines' prompt templates tokenize like the real one:
    the system prefix is exactly the 34 tokens `QwenImagePipeline` drops, and the 64 its edit
    pipelines drop (`Picture 1: <|vision_start|>…` and the instruction follow).
    """
    byte_symbol = _bytes_to_unicode()
    vocab: dict[str, int] = {symbol: i for i, symbol in enumerate(byte_symbol.values())}
    merges: list[tuple[str, str]] = []

    def add_word(word: str) -> None:
        symbols = "".join(byte_symbol[b] for b in word.encode())
        piece = symbols[0]
        for symbol in symbols[1:]:
            if piece + symbol not in vocab:
                merges.append((piece, symbol))
                vocab[piece + symbol] = len(vocab)
            piece += symbol

    # Words after a space first: their merges all start with `Ġ`, so one never breaks another.
    for word in _word_list():
        add_word(f" {word}")
    for word in _QWEN_EDIT_TEMPLATE_WORDS.split():
        add_word(f" {word}")
    # Words at the start of a piece (no space before): after them, so they cannot split a `Ġ` word.
    for word in ("system", "user", "assistant", "Describe", "color", "'s", "),", "Picture"):
        add_word(word)
    for token in _QWEN_SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    return Qwen2Tokenizer(
        vocab=vocab,
        merges=cast(Any, merges),  # `tokenizers` takes (left, right) pairs, whatever the hint says
        model_max_length=32768,
        additional_special_tokens=list(_QWEN_SPECIAL_TOKENS[1:]),
    )
