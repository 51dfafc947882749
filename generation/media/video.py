"""Short videos as files: H.264 MP4s carrying their parameters, decoding, and fitting an upload limit.

Pure numpy, Pillow and PyAV (no torch): frames are `(F, H, W, 3)` uint8 RGB arrays. The choices,
each for playing inline in Discord (a browser's `<video>`) rather than as a download:

- H.264 (libx264) in MP4: the one video codec and container every browser and phone decodes.
- yuv420p: the only chroma layout browsers' H.264 decoders accept; 4:4:4 or 10-bit plays nowhere.
  4:2:0 needs even sides, so an odd width or height is padded by one pixel (its edge repeated: no
  source pixel is lost and nothing visible is added).
- BT.709, limited range, tagged in the stream: what players assume for untagged H.264 varies
  (BT.601 or BT.709), so the colours are converted and labelled explicitly, and `decode_frames`
  honours the label (PyAV's `to_ndarray` alone does not: it always decodes as BT.601).
- `movflags=+faststart`: the index (`moov`) is written before the media data (`mdat`), so a player
  can start while the file is still arriving; with the index last, it must fetch the end first, and
  an inline player may show a download instead. The muxer moves the index by reading its own output
  back (it reopens it by name, which fails for a Python file object), so a second cursor on the
  same in-memory buffer is handed to it through `io_open` (`_MemoryFile`).
- `comment` metadata: the generation parameters travel with the file, as the PNGs' text chunk does.
- Fitting an upload limit: first the bitrate (computed from the limit and the duration, with room
  for the container), since that keeps the picture's size; only when the encoder cannot get that
  low, or the bitrate would leave each pixel under a quarter of the bits the quality target spent
  on this very clip (past that, a smaller picture looks better than a blocky large one), is the
  size stepped down (aspect kept, even sides) to a 64-pixel short side. Nothing over the limit is
  ever returned: `VideoTooLarge`.

Not bit-reproducible: the libx264 in PyAV's wheels gives slightly different bytes from run to run
at some small sizes (measured at 96×64 and 192×128, not at 256² or 512²; it goes away with
`asm=0`, `mbtree=0`, `bframes=0` or `rc-lookahead=0`, none worth its cost), so compare decoded
pictures, not bytes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import av.container
import numpy as np
from PIL import Image

CRF = 23  # libx264's default quality: visually good at a few hundred KB per second at 512²
PRESET = "medium"  # libx264's default; "veryfast" is ~2× faster and ~10% larger
MIN_SHORT_SIDE = 64  # the smallest picture `fit_mp4` steps down to
SCALE_STEP = 0.75  # each step down multiplies both sides by this
MIN_RATE_SHARE = 0.25  # of the quality-targeted encode's bits per pixel: below it, the size steps down
MIN_BITRATE = 4_000  # bits per second: the lowest target `fit_mp4` asks the encoder for
RATE_RETRIES = 3  # encodes per size when the encoder overshoots its target bitrate
_FILL = 0.92  # aim the target bitrate at this share of the budget (the rate control overshoots a little)
_TRAILER_BYTES = 2048  # the container's fixed overhead (ftyp, moov, x264's settings SEI), with room to spare
_BYTES_PER_FRAME = 16  # the index's growth per frame (stts, stsz, ctts, stss entries)
_BT709 = 1  # AVCOL_PRI_BT709 = AVCOL_TRC_BT709 = AVCOL_SPC_BT709
_LIMITED_RANGE = 1  # AVCOL_RANGE_MPEG


class VideoTooLarge(ValueError):
    """Even the smallest picture at the lowest bitrate is over the upload limit."""


@dataclass(frozen=True)
class VideoInfo:
    """What `probe_mp4` reads from an MP4's header (no frame is decoded)."""

    frames: int
    fps: float
    width: int
    height: int
    codec: str  # "h264"
    pix_fmt: str  # "yuv420p"
    duration_s: float
    comment: str  # the container's `comment` metadata; "" when absent


class _MemoryFile:
    """A seekable file over a shared bytearray. The faststart pass reopens the output for reading
    while writing it (`io_open`); each cursor keeps its own position, like two handles on one file."""

    def __init__(self, data: bytearray) -> None:
        self.data = data
        self.pos = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self.data) if size < 0 else min(len(self.data), self.pos + size)
        out = bytes(self.data[self.pos : end])
        self.pos = max(self.pos, end)
        return out

    def write(self, chunk: bytes) -> int:
        if self.pos > len(self.data):
            self.data.extend(bytes(self.pos - len(self.data)))
        self.data[self.pos : self.pos + len(chunk)] = chunk
        self.pos += len(chunk)
        return len(chunk)

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: len(self.data)}[whence]
        self.pos = base + offset
        return self.pos

    def tell(self) -> int:
        return self.pos


def _rate(fps: float) -> Fraction:
    if not fps > 0 or not math.isfinite(fps):
        raise ValueError(f"fps must be a positive number, not {fps}")
    return Fraction(fps).limit_denominator(1001)  # 23.976 → 24000/1001


def _check_frames(frames: np.ndarray) -> None:
    if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (F, H, W, 3) uint8, not {frames.shape} {frames.dtype}")
    if frames.shape[0] == 0:
        raise ValueError("no frames to encode")


def _even_frames(frames: np.ndarray) -> np.ndarray:
    """`frames` with an odd height or width padded by one pixel (the last row or column repeated)."""
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if not pad_h and not pad_w:
        return frames
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def _encode(
    frames: np.ndarray,
    fps: float,
    *,
    comment: str,
    crf: int,
    bitrate: int | None,
    size: tuple[int, int] | None = None,
) -> bytes:
    """The MP4 of `frames` (even sides), scaled to `size` (width, height) when given."""
    rate = _rate(fps)
    height, width = frames.shape[1:3]
    out_w, out_h = size if size is not None else (width, height)
    data = bytearray()

    def io_open(url: str, flags: int, options: dict[str, str]) -> _MemoryFile:
        return _MemoryFile(data)  # the faststart pass's reader over the output so far

    container = av.open(
        _MemoryFile(data), mode="w", format="mp4", options={"movflags": "+faststart"}, io_open=io_open
    )
    with container:
        if comment:
            container.metadata["comment"] = comment
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = out_w, out_h
        stream.pix_fmt = "yuv420p"
        codec = stream.codec_context
        codec.color_primaries = codec.color_trc = codec.colorspace = _BT709
        codec.color_range = _LIMITED_RANGE
        options: dict[str, object] = {"preset": PRESET}
        if bitrate is None:
            options["crf"] = str(crf)
        else:
            stream.bit_rate = bitrate
        stream.options = options
        for index, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24").reformat(
                width=out_w,
                height=out_h,
                format="yuv420p",
                dst_colorspace="itu709",
                dst_color_range="MPEG",
                interpolation="AREA",
            )
            frame.pts = index  # in 1/fps: the codec's time base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return bytes(data)


def encode_mp4(
    frames: np.ndarray, fps: float, *, comment: str = "", bitrate: int | None = None, crf: int = CRF
) -> bytes:
    """`frames` ((F, H, W, 3) uint8 RGB) as an H.264/yuv420p MP4 with its index first (faststart).

    Quality-targeted (`crf`) unless `bitrate` (bits per second) is given. Odd sides are padded to
    even. `comment` is stored as the container's `comment` metadata."""
    _check_frames(frames)
    return _encode(_even_frames(frames), fps, comment=comment, crf=crf, bitrate=bitrate)


def _open(data: bytes) -> av.container.InputContainer:
    return av.open(_MemoryFile(bytearray(data)), mode="r")


def probe_mp4(data: bytes) -> VideoInfo:
    """The frame count, rate, size, codec and comment of an MP4's first video stream.

    Raises av.error.InvalidDataError (a ValueError) for bytes that are not a video."""
    with _open(data) as container:
        stream = container.streams.video[0]
        codec = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        frames = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        else:
            duration = frames / fps if fps else 0.0
        info = VideoInfo(
            frames=frames,
            fps=fps,
            width=codec.width,
            height=codec.height,
            codec=codec.name,
            pix_fmt=codec.pix_fmt or "",
            duration_s=duration,
            comment=container.metadata.get("comment", ""),
        )
    return info


def _rgb(frame: av.VideoFrame) -> np.ndarray:
    """A decoded frame as (H, W, 3) uint8 RGB, read with the matrix its stream is tagged with.

    PyAV's `to_ndarray` asks swscale for a colorspace change only when source and destination
    differ, and both default to the frame's own tag, so BT.709 frames would decode with swscale's
    default BT.601 matrix; the destination (ignored for RGB output) is set apart to force it."""
    if frame.colorspace == _BT709:
        return frame.to_ndarray(
            format="rgb24",
            src_colorspace="itu709",
            dst_colorspace="itu601",
            src_color_range=frame.color_range or _LIMITED_RANGE,
        )
    return frame.to_ndarray(format="rgb24")


def _decoded(data: bytes) -> Iterator[av.VideoFrame]:
    with _open(data) as container:
        yield from container.decode(video=0)


def decode_frames(data: bytes) -> np.ndarray:
    """Every frame of an MP4 as (F, H, W, 3) uint8 RGB."""
    frames = [_rgb(frame) for frame in _decoded(data)]
    if not frames:
        raise ValueError("the video has no frames")
    return np.stack(frames)


def last_frame(data: bytes) -> Image.Image:
    """The MP4's last frame as an RGB picture (where an Extend continues from)."""
    last: av.VideoFrame | None = None
    for frame in _decoded(data):
        last = frame
    if last is None:
        raise ValueError("the video has no frames")
    return Image.fromarray(_rgb(last), mode="RGB")


def join_clips(first: np.ndarray, second: np.ndarray, *, drop_first_of_second: bool = True) -> np.ndarray:
    """`first` followed by `second` (both (F, H, W, 3)). An Extend's clip starts from `first`'s last
    frame, so by default its first frame, a repeat of that one, is dropped."""
    if first.shape[1:] != second.shape[1:]:
        raise ValueError(f"clips of different frame sizes: {first.shape[1:]} and {second.shape[1:]}")
    tail = second[1:] if drop_first_of_second else second
    return np.concatenate([first, tail])


def _even(value: float) -> int:
    return max(2, 2 * round(value / 2))


def size_ladder(width: int, height: int) -> list[tuple[int, int]]:
    """(width, height) then smaller sizes, both sides times `SCALE_STEP` each step (even, aspect
    kept), ending at a `MIN_SHORT_SIDE` short side (or at the start, if already that small)."""
    sizes = [(_even(width), _even(height))]
    short = min(width, height)
    scale = 1.0
    while short * scale > MIN_SHORT_SIDE:
        scale = max(scale * SCALE_STEP, MIN_SHORT_SIDE / short)
        size = (_even(width * scale), _even(height * scale))
        if size != sizes[-1]:
            sizes.append(size)
    return sizes


def _budget_bitrate(limit_bytes: int, frames: int, fps: float, comment: str) -> int:
    """The bitrate (bits per second) that fills `limit_bytes` less the container's overhead."""
    overhead = _TRAILER_BYTES + len(comment.encode()) + _BYTES_PER_FRAME * frames
    return int((limit_bytes - overhead) * 8 * _FILL / (frames / fps))


def fit_mp4(
    frames: np.ndarray,
    fps: float,
    limit_bytes: int,
    *,
    comment: str = "",
    crf: int = CRF,
) -> bytes:
    """`encode_mp4(frames, fps, comment=comment, crf=crf)` if it is at most `limit_bytes`; otherwise
    re-encoded at the bitrate the limit allows (less the container's overhead), then, where that is
    under `MIN_RATE_SHARE` of the quality encode's bits per pixel or the encoder overshoots, at
    smaller sizes (`size_ladder`) until it fits. Never over the limit: raises `VideoTooLarge`."""
    _check_frames(frames)
    frames = _even_frames(frames)
    data = _encode(frames, fps, comment=comment, crf=crf, bitrate=None)
    if len(data) <= limit_bytes:
        return data
    return _fit_by_rate(frames, fps, limit_bytes, comment=comment, quality_bytes=len(data))


def _fit_by_rate(
    frames: np.ndarray, fps: float, limit_bytes: int, *, comment: str, quality_bytes: int
) -> bytes:
    """The fitting after a quality-targeted encode of `frames` came to `quality_bytes`."""
    count, height, width = frames.shape[:3]
    budget = _budget_bitrate(limit_bytes, count, fps, comment)
    quality_bits_per_pixel = quality_bytes * 8 / (count * height * width)
    sizes = size_ladder(width, height)
    for index, size in enumerate(sizes):
        smallest = index == len(sizes) - 1
        # Too few bits for this many pixels: a smaller picture looks better. The smallest is tried
        # regardless, down to MIN_BITRATE.
        wanted = MIN_RATE_SHARE * quality_bits_per_pixel * size[0] * size[1] * fps
        floor = MIN_BITRATE if smallest else max(MIN_BITRATE, math.ceil(wanted))
        bitrate = max(budget, floor) if smallest else budget
        for _ in range(RATE_RETRIES):
            if bitrate < floor:
                break
            data = _encode(frames, fps, comment=comment, crf=CRF, bitrate=bitrate, size=size)
            if len(data) <= limit_bytes:
                return data
            lower = int(bitrate * limit_bytes / len(data) * _FILL)  # the overshoot, taken off the target
            bitrate = max(lower, floor) if smallest and bitrate > floor else lower
    raise VideoTooLarge(
        f"cannot fit {count} frames into {limit_bytes} bytes, even at "
        f"{sizes[-1][0]}×{sizes[-1][1]} and {MIN_BITRATE} bits per second"
    )


def fit_mp4_bytes(data: bytes, limit_bytes: int) -> bytes:
    """An MP4 re-encoded to at most `limit_bytes` (as `fit_mp4`), keeping its frame rate and
    comment; `data` itself when it already fits."""
    if len(data) <= limit_bytes:
        return data
    info = probe_mp4(data)  # too large as it is: straight to the bitrate, then the size
    frames = _even_frames(decode_frames(data))
    return _fit_by_rate(frames, info.fps, limit_bytes, comment=info.comment, quality_bytes=len(data))
