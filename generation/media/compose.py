"""Finished pictures as files: PNGs carrying their parameters, 2×2 grids, and fitting an upload limit.

The `parameters` text is in AUTOMATIC1111's format, so other tools (and people) can read back how
an image was made. Pillow only; no torch.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Sequence

from PIL import Image, PngImagePlugin

from generation.prompts.references import references_text
from generation.prompts.request import GenerationRequest, Mode

DEFAULT_SAMPLER = "Euler a"
PARAMETERS_KEY = "parameters"
_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286
_SEED_RE = re.compile(r"(?:^|[\s,])Seed: (\d+)")


def _quote(value: str) -> str:
    """A value as A1111 writes it: JSON-quoted when it holds a comma, colon or newline."""
    return json.dumps(value, ensure_ascii=False) if any(c in value for c in ",:\n") else value


def _safe(text: str) -> str:
    """Text that encodes to UTF-8 (lone surrogates become '?')."""
    return text.encode("utf-8", "replace").decode("utf-8")


def parameters_text(
    request: GenerationRequest, seed: int, *, sampler: str = DEFAULT_SAMPLER, model_hash: str | None = None
) -> str:
    """`request`'s settings for the image made with `seed`, in AUTOMATIC1111's `parameters` format:
    prompt, an optional "Negative prompt:" line, then "Steps: …, Sampler: …, CFG scale: …, Seed: …,
    Size: WxH, Model hash: … (where known), Model: …" (plus "Denoising strength" when drawn from a
    picture), and for an edit a line "Action: zoom out 2x of job …", with references a last line
    "References: style ×100: 1a2b3c4d5e (https://…), …". LoRAs follow the prompt as
    AUTOMATIC1111 writes them, `<lora:name:weight>`."""
    lines = [request.prompt + "".join(f" <lora:{name}:{weight:g}>" for name, weight in request.loras)]
    if request.negative_prompt:
        lines.append(f"Negative prompt: {request.negative_prompt}")
    fields = [
        f"Steps: {request.steps}",
        f"Sampler: {_quote(sampler)}",
        f"CFG scale: {float(round(request.guidance, 4))}",
        f"Seed: {seed}",
        f"Size: {request.width}x{request.height}",
        *([f"Model hash: {model_hash}"] if model_hash else []),
        f"Model: {_quote(request.model)}",
    ]
    if request.tile:
        fields.append("Tiling: True")
    if request.mode is not Mode.TXT2IMG and request.strength is not None:
        fields.append(f"Denoising strength: {round(request.strength, 4)}")
    lines.append(", ".join(fields))
    if request.edit is not None:  # what was done, and to which job's picture
        lines.append(request.edit.action_text())
    if request.references:  # each reference picture: its kind, weight, hash and where it came from
        lines.append(f"References: {references_text(request.references)}")
    return _safe("\n".join(lines))


def _pnginfo(text: str) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    text = _safe(text)
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        info.add_itxt(PARAMETERS_KEY, text)
    else:
        info.add_text(PARAMETERS_KEY, text)
    return info


def _png_bytes(image: Image.Image, text: str | None, compress_level: int = 6) -> bytes:
    buf = io.BytesIO()
    pnginfo = _pnginfo(text) if text is not None else None
    image.save(buf, format="PNG", pnginfo=pnginfo, compress_level=compress_level)
    return buf.getvalue()


def encode_png(
    image: Image.Image,
    request: GenerationRequest,
    seed: int,
    *,
    sampler: str = DEFAULT_SAMPLER,
    model_hash: str | None = None,
) -> bytes:
    """`image` as PNG bytes with a `parameters` chunk (tEXt, or iTXt for non-Latin-1 text)."""
    return _png_bytes(image, parameters_text(request, seed, sampler=sampler, model_hash=model_hash))


def read_parameters(data: bytes) -> str | None:
    """The `parameters` text of a PNG (tEXt/iTXt) or JPEG (comment or EXIF UserComment) we wrote;
    None when there is none or `data` is not an image."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format == "PNG":
                image.load()  # text chunks after the image data are read too
                value = image.text.get(PARAMETERS_KEY)  # type: ignore[attr-defined]
                return str(value) if value is not None else None
            comment = image.info.get("comment")
            if isinstance(comment, bytes) and comment:
                return comment.decode("utf-8", "replace")
            raw = image.getexif().get_ifd(_EXIF_IFD).get(_USER_COMMENT)
            if isinstance(raw, bytes) and raw.startswith(b"UNICODE\0"):
                return raw[8:].decode("utf-16-be", "replace")
    except Exception:  # any undecodable input simply has no parameters
        return None
    return None


def _decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.copy()


def side_by_side(pictures: Sequence[Image.Image], pixels: int, step: int) -> Image.Image:
    """`pictures` in one row, each at the same height, the row scaled to about `pixels` pixels with
    sides a multiple of `step` (the input of a model that takes one picture for several)."""
    height = max(p.height for p in pictures)
    widths = [max(1, round(p.width * height / p.height)) for p in pictures]
    row = Image.new("RGB", (sum(widths), height))
    x = 0
    for picture, width in zip(pictures, widths, strict=True):
        row.paste(picture.convert("RGB").resize((width, height), Image.Resampling.LANCZOS), (x, 0))
        x += width
    scale = (pixels / (row.width * row.height)) ** 0.5
    size = (
        max(step, round(row.width * scale / step) * step),
        max(step, round(row.height * scale / step) * step),
    )
    return row.resize(size, Image.Resampling.LANCZOS)


def grid_2x2(pngs: Sequence[bytes]) -> bytes:
    """One PNG of up to four images: one is returned unchanged, two side by side, three or four in
    a 2×2 grid (an empty cell stays black). Its `parameters` are the first image's plus
    `Seeds: "a, b, …"` listing every image's seed."""
    if not 1 <= len(pngs) <= 4:
        raise ValueError(f"a grid holds 1 to 4 images, not {len(pngs)}")
    if len(pngs) == 1:
        return pngs[0]
    images = [_decode(p) for p in pngs]
    cell_w = max(im.width for im in images)
    cell_h = max(im.height for im in images)
    rows = 1 if len(images) == 2 else 2
    grid = Image.new("RGB", (cell_w * 2, cell_h * rows), (0, 0, 0))
    for i, im in enumerate(images):
        x = (i % 2) * cell_w + (cell_w - im.width) // 2
        y = (i // 2) * cell_h + (cell_h - im.height) // 2
        grid.paste(im.convert("RGB"), (x, y))
    texts = [read_parameters(p) for p in pngs]
    text = texts[0]
    if text is not None:
        seeds = [m.group(1) for t in texts if t is not None for m in [_SEED_RE.search(t)] if m is not None]
        text += f', Seeds: "{", ".join(seeds)}"'
    return _png_bytes(grid, text)


def _jpeg_bytes(image: Image.Image, text: str | None, quality: int) -> bytes:
    buf = io.BytesIO()
    extra: dict[str, object] = {}
    if text is not None:
        exif = Image.Exif()
        exif.get_ifd(_EXIF_IFD)[_USER_COMMENT] = b"UNICODE\0" + text.encode("utf-16-be")
        extra = {"comment": text.encode("utf-8"), "exif": exif}
    image.save(buf, format="JPEG", quality=quality, optimize=True, **extra)
    return buf.getvalue()


def _rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


def fit_to_size(data: bytes, limit_bytes: int) -> tuple[bytes, str]:
    """`data` (a PNG) re-encoded to at most `limit_bytes`, with its file extension: unchanged if it
    fits, else PNG at maximum compression, else JPEG at falling quality, else JPEG downscaled.
    The parameters are kept (PNG chunk, or JPEG comment + EXIF UserComment) unless only dropping
    them makes it fit. Raises ValueError when even a tiny JPEG is over the limit."""
    if len(data) <= limit_bytes:
        return data, "png"
    text = read_parameters(data)
    image = _decode(data)
    smaller = _png_bytes(image, text, compress_level=9)
    if len(smaller) <= limit_bytes:
        return smaller, "png"
    rgb = _rgb(image)
    for quality in (92, 85, 75, 60, 45):
        jpeg = _jpeg_bytes(rgb, text, quality)
        if len(jpeg) <= limit_bytes:
            return jpeg, "jpg"
    while min(rgb.size) > 16:
        rgb = rgb.resize((max(1, rgb.width * 3 // 4), max(1, rgb.height * 3 // 4)), Image.Resampling.LANCZOS)
        jpeg = _jpeg_bytes(rgb, text, 80)
        if len(jpeg) <= limit_bytes:
            return jpeg, "jpg"
    jpeg = _jpeg_bytes(rgb, None, 60)
    if len(jpeg) <= limit_bytes:
        return jpeg, "jpg"
    raise ValueError(f"cannot fit the image into {limit_bytes} bytes")
