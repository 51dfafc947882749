# mypy: disable-error-code="no-untyped-call"
"""The `tiny` captioning model for `/describe` in tests: a BLIP of seeded random weights from small
configs, with a small WordPiece vocabulary written locally, saved once into the cache folder."""

from __future__ import annotations

import string
from pathlib import Path

import torch
from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipProcessor

from generation.pipelines.tiny import ensure_built

TINY_DESCRIBER_FOLDER = "tiny-describe-v1"  # bump when build_tiny_describer changes
_WORDS = "a an the of in on with and photo painting portrait fox owl cat dog snow forest city night light"
_SIZE = 32


def _vocab() -> list[str]:
    letters = list(string.ascii_lowercase)
    return [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *letters,
        *(f"##{c}" for c in letters),
        *_WORDS.split(),
    ]


def build_tiny_describer(folder: Path, seed: int = 0) -> None:
    """Write the tiny BLIP captioner (model and processor) to `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(_vocab()) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(str(vocab_file))
    small = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4}
    text = {
        **small,
        "vocab_size": len(tokenizer),
        "max_position_embeddings": 64,
        "bos_token_id": tokenizer.cls_token_id,
        "sep_token_id": tokenizer.sep_token_id,
        "eos_token_id": tokenizer.sep_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = BlipConfig(
        text_config=text, vision_config={**small, "image_size": _SIZE, "patch_size": 8}, projection_dim=32
    )
    torch.manual_seed(seed)
    BlipForConditionalGeneration(config).save_pretrained(folder)
    image_processor = _image_processor()
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)


def _image_processor() -> object:
    import transformers

    # Without torchvision, transformers 5 uses the PIL processor (and warns when asked for the other).
    cls = getattr(transformers, "BlipImageProcessorPil", None) or transformers.BlipImageProcessor
    return cls(size={"height": _SIZE, "width": _SIZE})


def ensure_tiny_describer(cache_dir: Path, seed: int = 0) -> Path:
    """The folder of the tiny captioner under `cache_dir`, built on first use."""
    return ensure_built(
        cache_dir / TINY_DESCRIBER_FOLDER, "config.json", lambda tmp: build_tiny_describer(tmp, seed)
    )
