"""The image store (content-addressed, atomic, safe against forged digests) and upload checks."""

from __future__ import annotations

import hashlib
import io
import os
import random
from datetime import date
from pathlib import Path

import pytest
from PIL import Image

from generation.media.image_store import (
    ImageNotFound,
    ImageStore,
    ImageStoreError,
    InvalidImage,
    decode_image,
    fit_source,
    load_source,
)


def png_bytes(size: tuple[int, int] = (16, 16), mode: str = "RGB", color: object = (200, 10, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")  # type: ignore[arg-type]
    return buf.getvalue()


def test_put_is_content_addressed_and_idempotent(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    data = png_bytes()
    digest = store.put(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert store.put(data) == digest
    assert store.get(digest) == data
    assert store.path(digest).read_bytes() == data
    assert digest in store and ("0" * 64) not in store
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files == [store.path(digest)]  # one file, no temp files left over


def test_put_repairs_a_truncated_file(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    data = png_bytes()
    digest = store.put(data)
    store.path(digest).write_bytes(data[:10])  # as if a crash had torn it (cannot happen via put)
    store.put(data)
    assert store.get(digest) == data


def test_writes_are_atomic_a_failed_write_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ImageStore(tmp_path)
    data = png_bytes()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(ImageStoreError, match=str(tmp_path)):
        store.put(data)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    with pytest.raises(ImageNotFound):
        store.get(hashlib.sha256(data).hexdigest())


def test_missing_digest_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(ImageNotFound):
        ImageStore(tmp_path).get("a" * 64)


@pytest.mark.parametrize(
    "forged",
    [
        "../../etc/passwd",
        "A" * 64,
        "a" * 63,
        "a" * 65,
        "g" * 64,
        "a" * 64 + "\n",
        "/" + "a" * 63,
        "",
        "..",
        "a" * 32 + "/" + "a" * 31,
    ],
)
def test_forged_digest_never_touches_the_file_system(tmp_path: Path, forged: str) -> None:
    store = ImageStore(tmp_path / "images")
    (tmp_path / "secret").write_bytes(b"secret")
    for call in (store.get, store.path):
        with pytest.raises(ValueError):
            call(forged)
    assert forged not in store


def test_unwritable_folder_raises_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    store = ImageStore(blocker / "images")  # cannot be created, even as root
    with pytest.raises(ImageStoreError) as info:
        store.put(b"data")
    assert str(blocker / "images") in str(info.value) and "OUTPUT_DIR" in str(info.value)
    with pytest.raises(ImageStoreError):
        store.save_result("job1", 0, b"data")


def test_save_result_path_by_date_and_job(tmp_path: Path) -> None:
    store = ImageStore(tmp_path, today=lambda: date(2024, 5, 17))
    path = store.save_result("Ab_9-x", 3, b"png")
    assert path == tmp_path / "2024-05-17" / "Ab_9-x_3.png"
    assert path.read_bytes() == b"png"
    assert store.save_result("Ab_9-x", 3, b"png2") == path  # rewriting is fine and atomic
    assert path.read_bytes() == b"png2"


@pytest.mark.parametrize("job_id", ["../x", "a/b", "", "a b", "x" * 65, "é"])
def test_save_result_refuses_bad_job_ids(tmp_path: Path, job_id: str) -> None:
    with pytest.raises(ValueError):
        ImageStore(tmp_path).save_result(job_id, 0, b"x")
    assert list(tmp_path.iterdir()) == []


def test_save_result_refuses_negative_index(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        ImageStore(tmp_path).save_result("job", -1, b"x")


# --- uploads ---------------------------------------------------------------------------------------


def test_decode_image_accepts_png_and_jpeg() -> None:
    assert decode_image(png_bytes((20, 10))).size == (20, 10)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="JPEG")
    assert decode_image(buf.getvalue()).format == "JPEG"


@pytest.mark.parametrize(
    "data", [b"", b"hello, not an image", b"%PDF-1.4\n", random.Random(1).randbytes(500)]
)
def test_decode_image_refuses_non_images(data: bytes) -> None:
    with pytest.raises(InvalidImage) as info:
        decode_image(data)
    assert "\n" not in str(info.value) and str(info.value)


def test_decode_image_refuses_truncated_files() -> None:
    buf = io.BytesIO()
    Image.frombytes("RGB", (64, 64), random.Random(2).randbytes(64 * 64 * 3)).save(buf, format="PNG")
    with pytest.raises(InvalidImage, match="damaged"):
        decode_image(buf.getvalue()[: len(buf.getvalue()) // 2])


def test_decode_image_refuses_decompression_bombs() -> None:
    bomb = png_bytes((5000, 5000), mode="1", color=0)  # tiny file, 25 megapixels
    assert len(bomb) < 10_000
    with pytest.raises(InvalidImage, match="too large"):
        decode_image(bomb, max_pixels=4096 * 4096)
    assert decode_image(png_bytes((100, 100)), max_pixels=100 * 100).size == (100, 100)


def test_load_source_flattens_transparency_and_fit_source_crops() -> None:
    image = load_source(png_bytes((30, 20), mode="RGBA", color=(0, 0, 0, 0)))
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (255, 255, 255)
    fitted = fit_source(image, 64, 16)
    assert fitted.size == (64, 16)
