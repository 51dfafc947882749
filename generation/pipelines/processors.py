"""Vision-language processors (Qwen-Image-Edit's `Qwen2VLProcessor`: its text encoder reads the
pictures too), loaded so that a pictures-only use needs no torchvision.

transformers 5 builds such a processor with its video processor, which needs torchvision, even where
only pictures pass (transformers#43986, #48556): without torchvision `from_pretrained` fails before
any picture is read. Where torchvision is missing, `images_only_processors` makes each such component
here from its own image processor and tokenizer (each through its real `from_pretrained`), without the
video part, and the loader hands them to the pipeline's `from_pretrained`; with torchvision, diffusers
loads them as it always does. By hand because no library offers a processor without its video part.
"""

from __future__ import annotations

import importlib.util
import json
from functools import cache
from pathlib import Path
from typing import Any

VIDEO_PART = "video_processor"


def torchvision_available() -> bool:
    """Whether torchvision is importable (transformers' video processors need it)."""
    return importlib.util.find_spec("torchvision") is not None


@cache
def images_only(processor_class: type) -> type:
    """`processor_class` without its video processor: built, used and saved with pictures and text only.
    It keeps the class's name and module, so a pipeline saved with it names the real class."""

    class ImagesOnly(processor_class):  # type: ignore[misc]
        def __init__(self, image_processor: Any = None, tokenizer: Any = None, **kwargs: Any) -> None:
            super().__init__(image_processor=image_processor, tokenizer=tokenizer, **kwargs)

        def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> Any:
            if argument_name == VIDEO_PART and argument is None:
                return None  # no video passes: none is needed
            return super().check_argument_for_proper_class(argument_name, argument)

        def save_pretrained(self, save_directory: str | Path, **kwargs: Any) -> list[str]:
            """The image processor's and the tokenizer's files, as the real class reads them back."""
            Path(save_directory).mkdir(parents=True, exist_ok=True)
            self.image_processor.save_pretrained(save_directory)
            return list(self.tokenizer.save_pretrained(save_directory))

    ImagesOnly.__name__ = ImagesOnly.__qualname__ = processor_class.__name__
    ImagesOnly.__module__ = processor_class.__module__
    return ImagesOnly


def _takes_video(class_name: str) -> type | None:
    """The transformers processor class named `class_name` if it is built with a video processor."""
    import transformers
    from transformers import ProcessorMixin

    cls = getattr(transformers, class_name, None)
    if not isinstance(cls, type) or not issubclass(cls, ProcessorMixin):
        return None
    return cls if VIDEO_PART in cls.get_attributes() else None  # type: ignore[no-untyped-call]


def load_images_only(processor_class: type, folder: Path) -> Any:
    """`processor_class` from `folder` (a pipeline's `processor/`) without its video processor."""
    from transformers import AutoImageProcessor, AutoTokenizer

    image_processor = AutoImageProcessor.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return images_only(processor_class)(image_processor=image_processor, tokenizer=tokenizer)


def images_only_processors(folder: str | Path) -> dict[str, Any]:
    """For a diffusers folder, its processors that need torchvision (by component name), made without
    their video part, when torchvision is missing; else none (diffusers loads them itself)."""
    index = Path(folder) / "model_index.json"
    if torchvision_available() or not index.is_file():
        return {}
    out: dict[str, Any] = {}
    for name, entry in json.loads(index.read_text()).items():
        if not (isinstance(entry, list) and len(entry) == 2 and entry[0] == "transformers"):
            continue
        cls = _takes_video(str(entry[1]))
        if cls is not None:
            out[name] = load_images_only(cls, Path(folder) / name)
    return out
