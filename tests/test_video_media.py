"""generation/media/video.py: MP4 encoding, probing, decoding and fitting an upload limit, on
synthetic moving frames (a fixed seed; every encode is a real libx264 run through PyAV)."""

from __future__ import annotations

import io
import itertools
import struct

import av
import numpy as np
import pytest

from generation.media.video import (
    MIN_SHORT_SIDE,
    VideoTooLarge,
    decode_frames,
    encode_mp4,
    fit_mp4,
    fit_mp4_bytes,
    join_clips,
    last_frame,
    probe_mp4,
    size_ladder,
)

COMMENT = "a red kite over hills — 凧 --seed 7 --steps 30"


def moving_frames(count: int = 24, height: int = 64, width: int = 96, noise: int = 0) -> np.ndarray:
    """A colour gradient with a red square moving right; with `noise`, per-frame grain (hard to compress)."""
    rng = np.random.default_rng(1234)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 128)], axis=-1).astype(np.int16)
    frames = []
    for t in range(count):
        frame = base.copy()
        left = (3 * t) % (width - 16)
        frame[height // 4 : height // 4 + 16, left : left + 16] = (240, 30, 30)
        if noise:
            frame += rng.integers(-noise, noise + 1, frame.shape, dtype=np.int16)
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return np.stack(frames)


def top_level_atoms(data: bytes) -> list[str]:
    """The MP4's top-level box types, in file order."""
    names, offset = [], 0
    while offset < len(data):
        (size,) = struct.unpack(">I", data[offset : offset + 4])
        names.append(data[offset + 4 : offset + 8].decode("ascii"))
        if size == 1:  # a 64-bit size follows the type
            (size,) = struct.unpack(">Q", data[offset + 8 : offset + 16])
        assert size >= 8
        offset += size
    assert offset == len(data)
    return names


def x264_settings(data: bytes) -> str:
    """The options x264 wrote into the stream (its user-data SEI): "rc=crf" or "rc=abr", etc."""
    start = data.index(b"x264 - core")
    return data[start : data.index(b"\0", start)].decode("ascii")


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return moving_frames()


@pytest.fixture(scope="module")
def mp4(clip: np.ndarray) -> bytes:
    return encode_mp4(clip, 8, comment=COMMENT)


@pytest.fixture(scope="module")
def grainy() -> np.ndarray:
    return moving_frames(height=128, width=192, noise=20)


def test_probe_reads_what_was_encoded(mp4: bytes) -> None:
    info = probe_mp4(mp4)
    assert (info.frames, info.fps, info.width, info.height) == (24, 8.0, 96, 64)
    assert (info.codec, info.pix_fmt) == ("h264", "yuv420p")
    assert info.duration_s == pytest.approx(3.0)
    assert info.comment == COMMENT


def test_comment_is_the_containers_metadata(mp4: bytes) -> None:
    with av.open(io.BytesIO(mp4)) as container:
        assert container.metadata["comment"] == COMMENT
        codec = container.streams.video[0].codec_context
        assert (codec.colorspace, codec.color_primaries, codec.color_trc) == (1, 1, 1)  # BT.709
        assert codec.color_range == 1  # limited ("tv") range


def test_index_comes_before_the_media_data(mp4: bytes) -> None:
    atoms = top_level_atoms(mp4)
    assert atoms[0] == "ftyp"
    assert atoms.index("moov") < atoms.index("mdat")


def test_no_comment_means_none_stored(clip: np.ndarray) -> None:
    data = encode_mp4(clip, 8)
    assert probe_mp4(data).comment == ""


def test_decoded_frames_are_close_to_the_input(clip: np.ndarray, mp4: bytes) -> None:
    decoded = decode_frames(mp4)
    assert decoded.shape == clip.shape and decoded.dtype == np.uint8
    error = np.abs(decoded.astype(np.int16) - clip.astype(np.int16))
    # Measured ≈ 1.7 (4:2:0 chroma at the square's edges, CRF 23); reading the BT.709 frames with
    # PyAV's default BT.601 matrix instead gives ≈ 7.3.
    assert error[0].mean() < 3.0
    assert error.mean() < 3.0
    # The square is where it was drawn: red there, the gradient's blue-grey elsewhere.
    assert decoded[-1, 16:32, 69:85, 0].mean() > 200


def test_odd_sides_are_padded_to_even() -> None:
    frames = moving_frames(count=6, height=63, width=95)
    data = encode_mp4(frames, 12)
    info = probe_mp4(data)
    assert (info.width, info.height, info.frames) == (96, 64, 6)
    decoded = decode_frames(data)
    assert decoded.shape == (6, 64, 96, 3)
    error = np.abs(decoded[:, :63, :95].astype(np.int16) - frames.astype(np.int16))
    assert error.mean() < 5.0
    # The added column and row repeat the last ones.
    assert np.abs(decoded[:, :63, 95].astype(np.int16) - frames[:, :, 94].astype(np.int16)).mean() < 8.0
    assert np.abs(decoded[:, 63, :95].astype(np.int16) - frames[:, 62, :].astype(np.int16)).mean() < 8.0


def test_fractional_frame_rate() -> None:
    info = probe_mp4(encode_mp4(moving_frames(count=6), 24000 / 1001))
    assert info.fps == pytest.approx(23.976, abs=1e-3)
    assert info.frames == 6


def test_a_bitrate_replaces_the_quality_target(grainy: np.ndarray) -> None:
    by_quality = encode_mp4(grainy, 24)
    by_rate = encode_mp4(grainy, 24, bitrate=40_000)  # 1 s: about 5 KB of video
    assert "rc=crf" in x264_settings(by_quality) and "crf=23.0" in x264_settings(by_quality)
    assert "rc=abr" in x264_settings(by_rate) and "bitrate=40 " in x264_settings(by_rate)
    assert len(by_rate) < len(by_quality) / 4
    assert len(by_rate) < 5_000 + 3_000


@pytest.mark.parametrize(
    ("frames", "fps"),
    [
        (np.zeros((0, 64, 64, 3), np.uint8), 8.0),
        (np.zeros((2, 64, 64, 4), np.uint8), 8.0),
        (np.zeros((2, 64, 64, 3), np.float32), 8.0),
        (np.zeros((2, 64, 64, 3), np.uint8), 0.0),
    ],
)
def test_bad_input_is_refused(frames: np.ndarray, fps: float) -> None:
    with pytest.raises(ValueError):
        encode_mp4(frames, fps)


def test_last_frame_is_the_decoded_last_frame(mp4: bytes) -> None:
    picture = last_frame(mp4)
    assert picture.mode == "RGB" and picture.size == (96, 64)
    np.testing.assert_array_equal(np.asarray(picture), decode_frames(mp4)[-1])


def test_join_clips_drops_the_repeated_start(clip: np.ndarray) -> None:
    second = moving_frames(count=10)
    second[0] = clip[-1]
    joined = join_clips(clip, second)
    assert joined.shape == (33, 64, 96, 3)
    np.testing.assert_array_equal(joined[23], clip[-1])
    np.testing.assert_array_equal(joined[24], second[1])
    assert join_clips(clip, second, drop_first_of_second=False).shape[0] == 34
    with pytest.raises(ValueError):
        join_clips(clip, moving_frames(count=2, height=32))


def test_size_ladder_keeps_aspect_and_even_sides() -> None:
    ladder = size_ladder(1280, 720)
    assert ladder[0] == (1280, 720)
    assert min(ladder[-1]) == MIN_SHORT_SIDE
    for width, height in ladder:
        assert width % 2 == 0 and height % 2 == 0
        assert width / height == pytest.approx(1280 / 720, rel=0.03)
    assert all(a[0] > b[0] for a, b in itertools.pairwise(ladder))
    assert size_ladder(96, 64) == [(96, 64)]  # already at the smallest


def test_fit_returns_the_quality_encode_when_it_fits(clip: np.ndarray, mp4: bytes) -> None:
    fitted = fit_mp4(clip, 8, 2 * len(mp4), comment=COMMENT)
    assert "rc=crf" in x264_settings(fitted)
    assert probe_mp4(fitted) == probe_mp4(mp4)


def test_fit_lowers_the_bitrate_before_the_size(grainy: np.ndarray) -> None:
    full = encode_mp4(grainy, 24, comment=COMMENT)
    limit = len(full) * 2 // 5  # ≈ 0.33 of the bits after the overhead: above MIN_RATE_SHARE
    fitted = fit_mp4(grainy, 24, limit, comment=COMMENT)
    assert len(fitted) <= limit
    info = probe_mp4(fitted)
    assert (info.width, info.height, info.frames, info.fps) == (192, 128, 24, 24.0)
    assert "rc=abr" in x264_settings(fitted)  # the size kept, the bitrate lowered
    assert info.comment == COMMENT
    assert top_level_atoms(fitted).index("moov") < top_level_atoms(fitted).index("mdat")
    assert decode_frames(fitted).shape == (24, 128, 192, 3)


def test_a_small_limit_scales_the_picture_down(grainy: np.ndarray) -> None:
    limit = 3_800  # about 10 kbit/s for 1 s: too few bits per pixel at 192×128
    fitted = fit_mp4(grainy, 24, limit, comment=COMMENT)
    assert len(fitted) <= limit
    info = probe_mp4(fitted)
    assert info.width < 192 and min(info.width, info.height) >= MIN_SHORT_SIDE
    assert info.width % 2 == 0 and info.height % 2 == 0
    assert info.width / info.height == pytest.approx(1.5, rel=0.05)
    assert info.frames == 24
    assert decode_frames(fitted).shape == (24, info.height, info.width, 3)


@pytest.mark.parametrize("limit", [100, 1_500])
def test_an_impossible_limit_raises(grainy: np.ndarray, limit: int) -> None:
    with pytest.raises(VideoTooLarge, match=f"into {limit} bytes"):
        fit_mp4(grainy, 24, limit, comment=COMMENT)


def test_fit_bytes_keeps_a_fitting_file_as_it_is(mp4: bytes) -> None:
    assert fit_mp4_bytes(mp4, len(mp4)) is mp4


def test_fit_bytes_reencodes_keeping_rate_and_comment(grainy: np.ndarray) -> None:
    full = encode_mp4(grainy, 24, comment=COMMENT)
    limit = len(full) // 4
    fitted = fit_mp4_bytes(full, limit)
    assert len(fitted) <= limit
    info = probe_mp4(fitted)
    assert (info.frames, info.fps, info.comment) == (24, 24.0, COMMENT)
    with pytest.raises(VideoTooLarge):
        fit_mp4_bytes(full, 1_000)
