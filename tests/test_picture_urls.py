"""Pictures named by URL (`bot.picture_urls`): only Discord's CDN (or exactly DISCORD_API_BASE's origin),
checked before anything connects; no redirects; size, type and decoding checked; a time limit. Against a
real aiohttp server on 127.0.0.1 that records every request it receives."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from PIL import Image

from bot.commands.errors import UserError
from bot.picture_urls import CDN_HOSTS, PictureOrigins, fetch_picture

LIMIT = 50_000
CDN = "Use a picture Discord serves: a link starting with https://cdn.discordapp.com/… or https://media.discordapp.net/…"


def _picture(fmt: str, size: int = 48) -> bytes:
    image = Image.effect_noise((size, size), 64).convert("RGB")
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


PNG = _picture("PNG")
JPEG = _picture("JPEG")
BMP = _picture("BMP")


@dataclass
class Server:
    """The picture server: `port` (the allowed origin) and `other_port` (the same app, a second
    listener), and every request either received."""

    port: int
    other_port: int
    seen: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def origins(self) -> PictureOrigins:
        return PictureOrigins.from_api_base(f"http://127.0.0.1:{self.port}/api/v10")


@pytest_asyncio.fixture
async def server() -> AsyncIterator[Server]:
    seen: list[str] = []
    release = asyncio.Event()

    @web.middleware
    async def record(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        seen.append(f"{request.method} {request.host}{request.path_qs}")
        return await handler(request)

    def picture(body: bytes, kind: str = "image/png") -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            return web.Response(body=body, content_type=kind)

        return handler

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("/png")

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for _ in range(20):
                await response.write(PNG[:8] + bytes(16_000))
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            pass  # the client hung up at its limit
        return response

    async def slow(request: web.Request) -> web.Response:
        await release.wait()  # set at teardown: the client gives up long before
        return web.Response(body=PNG, content_type="image/png")

    async def missing(request: web.Request) -> web.Response:
        raise web.HTTPNotFound()

    app = web.Application(middlewares=[record])
    app.router.add_get("/png", picture(PNG))
    app.router.add_get("/jpeg", picture(JPEG, "image/jpeg"))
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/big", picture(PNG[:8] + bytes(LIMIT * 2)))
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/html", picture(b"<html><body>hi</body></html>", "text/html"))
    app.router.add_get("/fake", picture(b"this is not a picture at all"))
    app.router.add_get("/bmp", picture(BMP))
    app.router.add_get("/slow", slow)
    app.router.add_get("/missing", missing)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    for _ in range(2):
        await web.TCPSite(runner, "127.0.0.1", 0).start()
    ports = [address[1] for address in runner.addresses]
    try:
        yield Server(ports[0], ports[1], seen)
    finally:
        release.set()
        await runner.cleanup()


async def refused(url: str, origins: PictureOrigins, timeout_s: float = 15.0) -> str:
    with pytest.raises(UserError) as caught:
        await fetch_picture(url, origins, limit_bytes=LIMIT, timeout_s=timeout_s)
    message = str(caught.value)
    assert "\n" not in message
    return message


async def test_fetches_png_and_jpeg(server: Server) -> None:
    assert await fetch_picture(server.url("/png"), server.origins, limit_bytes=LIMIT) == PNG
    assert await fetch_picture(server.url("/jpeg#frag"), server.origins, limit_bytes=LIMIT) == JPEG
    assert server.seen == [f"GET 127.0.0.1:{server.port}/png", f"GET 127.0.0.1:{server.port}/jpeg"]


async def test_a_body_of_exactly_the_limit_passes(server: Server) -> None:
    assert await fetch_picture(server.url("/png"), server.origins, limit_bytes=len(PNG)) == PNG
    with pytest.raises(UserError, match="too large"):
        await fetch_picture(server.url("/png"), server.origins, limit_bytes=len(PNG) - 1)


async def test_given_session_is_used_and_left_open(server: Server) -> None:
    async with aiohttp.ClientSession() as session:
        data = await fetch_picture(server.url("/png"), server.origins, limit_bytes=LIMIT, session=session)
        assert data == PNG
        assert not session.closed
        with pytest.raises(UserError, match="redirects"):
            await fetch_picture(server.url("/redirect"), server.origins, limit_bytes=LIMIT, session=session)
        assert not session.closed


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (
            "/redirect",
            "That picture URL redirects elsewhere (HTTP 302), and redirects aren't followed:"
            " link the picture itself.",
        ),
        ("/big", f"That picture is too large ({(LIMIT * 2 + 8) / 1024:.0f} KB): the limit is 49 KB."),
        ("/chunked", "That picture is too large: the limit is 49 KB."),
        ("/html", "That URL serves `text/html`, not a picture: link a PNG, JPEG, WebP or GIF picture."),
        (
            "/fake",
            "The file at that URL isn't a usable picture (that file is not a picture):"
            " link a PNG, JPEG, WebP or GIF picture.",
        ),
        ("/bmp", "The file at that URL is a BMP picture: link a PNG, JPEG, WebP or GIF."),
        (
            "/missing",
            "That picture URL answered HTTP 404, not a picture: check the link (Discord links expire)"
            " and try again.",
        ),
    ],
)
async def test_bad_answers_are_refused(server: Server, path: str, expected: str) -> None:
    assert await refused(server.url(path), server.origins) == expected
    assert server.seen == [f"GET 127.0.0.1:{server.port}{path}"]  # one request: no redirect followed


async def test_slow_download_times_out(server: Server) -> None:
    started = time.monotonic()
    message = await refused(server.url("/slow"), server.origins, timeout_s=0.2)
    assert message == "That picture took too long to download (over 0.2 s): try again, or a smaller picture."
    assert time.monotonic() - started < 2
    assert server.seen == [f"GET 127.0.0.1:{server.port}/slow"]


async def test_connection_failure_is_a_clear_refusal() -> None:
    origins = PictureOrigins.from_api_base("http://127.0.0.1:9/api/v10")  # discard port: nothing listens
    message = await refused("http://127.0.0.1:9/x.png", origins)
    assert message == "I couldn't download that picture (the connection failed): try again shortly."


def refused_urls(port: int, other_port: int) -> list[tuple[str, str]]:
    local = f"http://127.0.0.1:{port}/…"
    use = f". Use a picture Discord serves: a link starting with {local}"
    return [
        (f"http://localhost:{port}/png", "The URL host `localhost` isn't accepted" + use),
        (f"http://127.0.0.2:{port}/png", "The URL host `127.0.0.2` isn't accepted" + use),
        (f"http://127.0.0.1:{other_port}/png", f"The URL port `{other_port}` isn't accepted" + use),
        ("http://127.0.0.1/png", "The URL port `80` isn't accepted" + use),
        (f"https://127.0.0.1:{port}/png", "The URL scheme `https:` isn't accepted (only `http:`)" + use),
        (
            "https://cdn.discordapp.com/attachments/1/2/x.png",
            "The URL scheme `https:` isn't accepted (only `http:`)" + use,
        ),
        (
            "http://cdn.discordapp.com/attachments/1/2/x.png",
            "The URL host `cdn.discordapp.com` isn't accepted" + use,
        ),
        ("http://example.com/x.png", "The URL host `example.com` isn't accepted" + use),
        (
            f"http://user:pass@127.0.0.1:{port}/png",
            "That URL contains a user name or password (`user:pass@`), which isn't accepted" + use,
        ),
        (
            f"http://127.0.0.1:{port}@example.com/png",
            "That URL contains a user name or password (`user:pass@`), which isn't accepted" + use,
        ),
        (f"ftp://127.0.0.1:{port}/png", "The URL scheme `ftp:` isn't accepted" + use),
        ("file:///etc/passwd", "The URL scheme `file:` isn't accepted" + use),
        ("javascript:alert(1)", "The URL scheme `javascript:` isn't accepted" + use),
        ("data:image/png;base64,iVBORw0KGgo=", "The URL scheme `data:` isn't accepted" + use),
        (f"//127.0.0.1:{port}/png", f"`//127.0.0.1:{port}/png` isn't a full URL" + use),
        ("not a url", "`not a url` isn't a valid URL (it has spaces or odd characters)" + use),
        ("127.0.0.1/png", "`127.0.0.1/png` isn't a full URL" + use),
        ("http://", "`http://` isn't a full URL" + use),
        ("http://127.0.0.1:99999/png", "`http://127.0.0.1:99999/png` isn't a valid URL" + use),
        (
            "http://127.0.0.1\\@example.com/",
            "`http://127.0.0.1\\@example.com/` isn't a valid URL (it has spaces or odd characters)" + use,
        ),
        ("   ", "That picture URL is empty" + use),
        ("http://x/" + "a" * 3000, "That picture URL is too long (over 2,048 characters)" + use),
    ]


async def test_refused_urls_make_no_request(server: Server) -> None:
    for url, expected in refused_urls(server.port, server.other_port):
        assert await refused(url, server.origins) == expected, url
    assert server.seen == []


def test_cdn_urls_without_an_api_base() -> None:
    origins = PictureOrigins.from_api_base(None)
    assert origins == PictureOrigins("https", CDN_HOSTS, 443)
    signed = "https://cdn.discordapp.com/attachments/1/2/cat.png?ex=65&is=64&hm=ab12"
    assert origins.check(signed) == signed
    assert origins.check(f"<{signed}>") == signed
    assert origins.check("HTTPS://Media.DiscordApp.NET:443/attachments/1/2/a.webp?format=png#x") == (
        "https://media.discordapp.net/attachments/1/2/a.webp?format=png"
    )
    refusals = {
        "http://cdn.discordapp.com/a.png": "The URL scheme `http:` isn't accepted (only `https:`)",
        "https://cdn.discordapp.com:8443/a.png": "The URL port `8443` isn't accepted",
        "https://cdn.discordapp.com.evil.com/x": "The URL host `cdn.discordapp.com.evil.com` isn't accepted",
        "https://cdn.discordapp.com./a.png": "The URL host `cdn.discordapp.com.` isn't accepted",
        "https://cdn%2Ediscordapp.com/a.png": "The URL host `cdn%2ediscordapp.com` isn't accepted",
        "https://discordapp.com/a.png": "The URL host `discordapp.com` isn't accepted",
        "https://evil.com/cdn.discordapp.com/a.png": "The URL host `evil.com` isn't accepted",
        "https://evil.com#@cdn.discordapp.com/a.png": "The URL host `evil.com` isn't accepted",
        "https://cdn.discordapp.com@evil.com/a.png": (
            "That URL contains a user name or password (`user:pass@`), which isn't accepted"
        ),
        "https://@cdn.discordapp.com/a.png": (
            "That URL contains a user name or password (`user:pass@`), which isn't accepted"
        ),
        "https://127.0.0.1/a.png": "The URL host `127.0.0.1` isn't accepted",
        "gopher://cdn.discordapp.com/a.png": "The URL scheme `gopher:` isn't accepted",
    }
    for url, reason in refusals.items():
        with pytest.raises(UserError) as caught:
            origins.check(url)
        assert str(caught.value) == f"{reason}. {CDN}", url


def test_origins_from_api_base() -> None:
    assert PictureOrigins.from_api_base("http://127.0.0.1:37871/api/v10") == PictureOrigins(
        "http", ("127.0.0.1",), 37871
    )
    assert PictureOrigins.from_api_base("https://Discord.Test/api") == PictureOrigins(
        "https", ("discord.test",), 443
    )
    assert PictureOrigins.from_api_base("") == PictureOrigins.from_api_base(None)
    for bad in ("ftp://127.0.0.1/api", "not a url", "http://127.0.0.1:99999/api"):
        with pytest.raises(ValueError, match="DISCORD_API_BASE"):
            PictureOrigins.from_api_base(bad)
