"""Pictures a member names by URL (`--sref URL`, `--oref URL`), fetched safely.

Only pictures Discord serves are fetched: `https://cdn.discordapp.com` and `https://media.discordapp.net`
in production, or exactly the scheme, host and port of DISCORD_API_BASE when that is set (a test or
loopback deployment: then the CDN hosts are refused). The URL is checked before anything connects;
redirects are never followed; the size is capped (Content-Length, then the streamed body), the type
checked (Content-Type, then the bytes must decode as a PNG, JPEG, WebP or GIF), and the whole download
has a time limit. Every refusal is a `UserError` with a one-line message for the member.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from bot.commands.errors import UserError
from generation.media.image_store import InvalidImage, decode_image

CDN_HOSTS = ("cdn.discordapp.com", "media.discordapp.net")
PICTURE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif")
PICTURE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")  # what the bytes must decode as (not BMP)
MAX_URL_CHARS = 2048
_CHUNK = 64 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _shown(value: str, width: int = 60) -> str:
    """`value` fit for a one-line message inside backticks: no backticks or control characters, cut."""
    clean = "".join(c if c.isprintable() and c != "`" else "?" for c in value)
    return clean if len(clean) <= width else clean[: width - 1] + "…"


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    if n < 1024 * 1024:
        return f"{n / 1024:.0f} KB"
    return f"{n / (1024 * 1024):.1f} MB"


@dataclass(frozen=True)
class PictureOrigins:
    """Where a picture URL may point: `scheme://host:port` for each of `hosts`."""

    scheme: str
    hosts: tuple[str, ...]
    port: int

    @classmethod
    def from_api_base(cls, api_base: str | None) -> PictureOrigins:
        """Discord's CDN over https when `api_base` (DISCORD_API_BASE) is unset; else exactly its
        scheme, host and port (a loopback Discord: the CDN hosts are not allowed then)."""
        if not api_base:
            return cls("https", CDN_HOSTS, 443)
        try:
            base = URL(api_base)
        except ValueError as exc:
            raise ValueError(f"DISCORD_API_BASE is not a URL ({exc}): {api_base!r}") from None
        if base.scheme not in _DEFAULT_PORTS or not base.raw_host or base.port is None:
            raise ValueError(f"DISCORD_API_BASE must be an http(s)://host[:port]/… URL, not {api_base!r}")
        return cls(base.scheme, (base.raw_host.lower(),), base.port)

    @property
    def accepted(self) -> str:
        """The allowed origins, for a message: `https://cdn.discordapp.com/… or …`."""
        port = None if self.port == _DEFAULT_PORTS.get(self.scheme) else self.port
        return " or ".join(f"{URL.build(scheme=self.scheme, host=h, port=port)}/…" for h in self.hosts)

    def _refuse(self, what: str) -> UserError:
        return UserError(f"{what}. Use a picture Discord serves: a link starting with {self.accepted}")

    def parse(self, url: str) -> URL:
        """`url` parsed and checked (see `check`), without its fragment; UserError if refused."""
        text = url.strip()
        if text.startswith("<") and text.endswith(">"):  # Discord's "no embed" form
            text = text[1:-1].strip()
        if not text:
            raise self._refuse("That picture URL is empty")
        if len(text) > MAX_URL_CHARS:
            raise self._refuse(f"That picture URL is too long (over {MAX_URL_CHARS:,} characters)")
        if any(c.isspace() or not c.isprintable() or c == "\\" for c in text):
            raise self._refuse(f"`{_shown(text)}` isn't a valid URL (it has spaces or odd characters)")
        try:
            parsed = URL(text)
            netloc = urlsplit(text).netloc
        except ValueError:
            raise self._refuse(f"`{_shown(text)}` isn't a valid URL") from None
        scheme = parsed.scheme.lower()
        if scheme and scheme not in _DEFAULT_PORTS:
            raise self._refuse(f"The URL scheme `{_shown(scheme, 20)}:` isn't accepted")
        if not scheme or not parsed.is_absolute() or not parsed.raw_host:
            raise self._refuse(f"`{_shown(text)}` isn't a full URL")
        if parsed.raw_user is not None or parsed.raw_password is not None or "@" in netloc:
            raise self._refuse(
                "That URL contains a user name or password (`user:pass@`), which isn't accepted"
            )
        if scheme != self.scheme:
            raise self._refuse(f"The URL scheme `{scheme}:` isn't accepted (only `{self.scheme}:`)")
        host = parsed.raw_host.lower()
        if host not in self.hosts:
            raise self._refuse(f"The URL host `{_shown(host)}` isn't accepted")
        if parsed.port != self.port:
            raise self._refuse(f"The URL port `{parsed.port}` isn't accepted")
        return parsed.with_fragment(None)

    def check(self, url: str) -> str:
        """The normalised `url` if it points at an allowed origin (http(s), no credentials, well formed);
        else UserError saying which part is wrong and what is accepted."""
        return str(self.parse(url))


def _checked_picture(data: bytes) -> None:
    """UserError unless `data` decodes fully as a PNG, JPEG, WebP or GIF picture."""
    try:
        image = decode_image(data)
    except InvalidImage as exc:
        reason = str(exc).split(": ")[0].rstrip(".")  # decode_image's text, without its "attach …" advice
        reason = reason[:1].lower() + reason[1:]
        raise UserError(
            f"The file at that URL isn't a usable picture ({reason}): link a PNG, JPEG, WebP or GIF picture."
        ) from None
    found = image.format
    image.close()
    if found not in PICTURE_FORMATS:
        raise UserError(
            f"The file at that URL is a {found or 'unknown'} picture: link a PNG, JPEG, WebP or GIF."
        )


async def _download(session: aiohttp.ClientSession, url: URL, limit_bytes: int) -> bytes:
    headers = {"Accept": ", ".join(PICTURE_TYPES), "Accept-Encoding": "identity"}
    async with session.get(url, allow_redirects=False, headers=headers) as resp:
        try:
            if 300 <= resp.status < 400:
                raise UserError(
                    f"That picture URL redirects elsewhere (HTTP {resp.status}),"
                    " and redirects aren't followed: link the picture itself."
                )
            if resp.status != 200:
                raise UserError(
                    f"That picture URL answered HTTP {resp.status}, not a picture: check the link"
                    " (Discord links expire) and try again."
                )
            kind = (resp.content_type or "").lower()
            if kind not in PICTURE_TYPES:
                raise UserError(
                    f"That URL serves `{_shown(kind or 'no type', 40)}`, not a picture:"
                    " link a PNG, JPEG, WebP or GIF picture."
                )
            if resp.content_length is not None and resp.content_length > limit_bytes:
                raise UserError(
                    f"That picture is too large ({_size(resp.content_length)}):"
                    f" the limit is {_size(limit_bytes)}."
                )
            body = bytearray()
            while chunk := await resp.content.read(min(_CHUNK, limit_bytes + 1 - len(body))):
                body += chunk
                if len(body) > limit_bytes:
                    raise UserError(f"That picture is too large: the limit is {_size(limit_bytes)}.")
            return bytes(body)
        except UserError:
            resp.close()  # drop the connection rather than read the rest
            raise


async def fetch_picture(
    url: str,
    origins: PictureOrigins,
    *,
    limit_bytes: int,
    timeout_s: float = 15.0,
    session: aiohttp.ClientSession | None = None,
) -> bytes:
    """The picture at `url`: checked against `origins` before anything connects, fetched without
    following redirects, at most `limit_bytes`, within `timeout_s` in all, and verified to decode.
    Uses a short-lived session of its own unless `session` is given. UserError on any refusal."""
    checked = origins.parse(url)
    try:
        async with asyncio.timeout(timeout_s):
            if session is not None:
                data = await _download(session, checked, limit_bytes)
            else:
                async with aiohttp.ClientSession(
                    cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False, trust_env=False
                ) as own:
                    data = await _download(own, checked, limit_bytes)
    except TimeoutError:
        raise UserError(
            f"That picture took too long to download (over {timeout_s:g} s): try again, or a smaller picture."
        ) from None
    except aiohttp.ClientError:
        raise UserError(
            "I couldn't download that picture (the connection failed): try again shortly."
        ) from None
    await asyncio.to_thread(_checked_picture, data)  # decoding a large picture would block the loop
    return data
