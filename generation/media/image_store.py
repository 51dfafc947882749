"""Image files on disk, and checking pictures that members upload.

`ImageStore` keeps source and result images content-addressed (by sha256) under OUTPUT_DIR, so a
button's custom_id or a stored job can name an image by its hash and survive restarts. Every write
is atomic (temp file + os.replace). Pillow only; no torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import tempfile
import warnings
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 8192 * 8192  # phone photos (12-50 MP) pass; PIL warns at 89 MP
ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
_DIGEST_RE = re.compile(r"[0-9a-f]{64}")
_JOB_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


RESULT_EXTENSIONS = ("png", "mp4")  # a picture, or an Animate clip


class ImageStoreError(Exception):
    """The image folder cannot be written or read; `str()` names the folder and what to fix."""


class ImageNotFound(KeyError):
    """No image with that digest is stored."""


class InvalidImage(ValueError):
    """Uploaded bytes are not a usable picture; `str()` is a one-line message for the member."""


def _today() -> date:
    return datetime.now(UTC).date()


def check_digest(digest: str) -> str:
    """`digest` if it is 64 lowercase hex characters (a sha256), else ValueError: a forged value
    (`../x`, a path) never reaches the file system."""
    if not isinstance(digest, str) or _DIGEST_RE.fullmatch(digest) is None:
        raise ValueError(f"not a sha256 hex digest: {digest!r:.80}")
    return digest


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class ImageStore:
    """Images under `root`: blobs at `root/sha256/<ab>/<digest>` and results at
    `root/<yyyy-mm-dd>/<job_id>_<index>.png` (the date from `today`, in UTC by default)."""

    def __init__(self, root: str | os.PathLike[str], *, today: Callable[[], date] = _today) -> None:
        self.root = Path(root)
        self._today = today

    def path(self, digest: str) -> Path:
        """Where the image with this digest is (or would be) kept."""
        check_digest(digest)
        return self.root / "sha256" / digest[:2] / digest

    def put(self, data: bytes) -> str:
        """Store `data` and return its sha256 hex digest. Idempotent; atomic."""
        digest = hashlib.sha256(data).hexdigest()
        path = self.path(digest)
        try:
            if path.is_file() and path.stat().st_size == len(data):
                return digest
        except OSError:
            pass  # the write below reports the problem
        self._write(path, data)
        return digest

    def get(self, digest: str) -> bytes:
        """The stored bytes; ImageNotFound if absent, ValueError for a malformed digest."""
        path = self.path(digest)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise ImageNotFound(digest) from None
        except OSError as exc:
            raise ImageStoreError(f"cannot read images in {self.root}: {exc.strerror or exc}") from exc

    def __contains__(self, digest: object) -> bool:
        return (
            isinstance(digest, str)
            and _DIGEST_RE.fullmatch(digest) is not None
            and self.path(digest).is_file()
        )

    def save_result(self, job_id: str, index: int, png: bytes, ext: str = "png") -> Path:
        """Keep a finished image as `root/<date>/<job_id>_<index>.png` (a clip: `.mp4`; atomic) and
        return its path."""
        if not isinstance(job_id, str) or _JOB_ID_RE.fullmatch(job_id) is None:
            raise ValueError(f"job id must be 1-64 characters of A-Z a-z 0-9 _ -: {job_id!r:.80}")
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise ValueError(f"image index must be a non-negative integer: {index!r}")
        if ext not in RESULT_EXTENSIONS:
            raise ValueError(f"a result is one of {', '.join(RESULT_EXTENSIONS)}, not {ext!r:.20}")
        path = self.root / self._today().isoformat() / f"{job_id}_{index}.{ext}"
        self._write(path, png)
        return path

    def _write(self, path: Path, data: bytes) -> None:
        try:
            _atomic_write(path, data)
        except OSError as exc:
            raise ImageStoreError(
                f"cannot write images to {self.root} ({exc.strerror or exc}); "
                "check that OUTPUT_DIR is a writable folder"
            ) from exc


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Fully decode an uploaded picture (PNG, JPEG, WebP, GIF, BMP). Raises InvalidImage for
    anything else, a truncated file, or one over `max_pixels` pixels (a decompression bomb)."""
    if not data:
        raise InvalidImage("That file is empty, not a picture.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
            width, height = image.size
            if width * height > max_pixels:
                raise InvalidImage(
                    f"That picture is too large ({width}×{height}); use one of at most {max_pixels:,} pixels."
                )
            image.load()
    except InvalidImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidImage("That picture is too large to open safely.") from None
    except UnidentifiedImageError:
        raise InvalidImage("That file is not a picture: attach a PNG, JPEG, WebP or GIF.") from None
    except Exception:  # any decoder failure means a broken file
        raise InvalidImage("That picture is damaged or truncated and can't be read.") from None
    return image


def load_source(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """An uploaded picture ready to start from: decoded (see `decode_image`), turned upright by its
    EXIF orientation, transparency flattened onto white, RGB."""
    image = decode_image(data, max_pixels)
    with contextlib.suppress(Exception):  # a broken EXIF block only loses the orientation
        image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


def fit_source(image: Image.Image, width: int, height: int) -> Image.Image:
    """`image` scaled and centre-cropped to exactly width×height (the request's aspect)."""
    return ImageOps.fit(image.convert("RGB"), (width, height), Image.Resampling.LANCZOS)
