"""Local HTTP servers for the image-URL tests: a web server with good and hostile answers, and a
canary that only counts connections. Both listen on loopback only, each on its own thread."""

from __future__ import annotations

import asyncio
import gzip
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from aiohttp import web

T = TypeVar("T")


class LoopThread:
    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class ImageWebServer(LoopThread):
    """GET /photo.png and friends on `host` (127.0.0.2 in the tests: loopback that a gateway can
    be told to allow without allowing 127.0.0.1, where the canary listens)."""

    def __init__(self, host: str, photo: bytes, huge_bytes: int) -> None:
        super().__init__("image-web-server")
        self.host = host
        self.photo = photo
        self.huge_bytes = huge_bytes
        self.requests: list[str] = []
        self.accept_encodings: list[str] = []
        self.disconnects: list[str] = []  # slow answers whose client went away before the end
        self.runner: web.AppRunner = self.run(self._start())
        self.port = self.runner.addresses[0][1]

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    async def _start(self) -> web.AppRunner:
        app = web.Application()
        routes = {
            "/photo.png": self._photo,
            "/redirect": self._redirect,
            "/loop": self._loop,
            "/huge": self._huge,
            "/huge-declared": self._huge_declared,
            "/slow-body": self._slow_body,
            "/slow-headers": self._slow_headers,
            "/stalls": self._stalls,
            "/empty": self._empty,
            "/text": self._text,
            "/maybe-gzip": self._maybe_gzip,
            "/bad-redirect": self._bad_redirect,
        }
        for path, handler in routes.items():
            app.router.add_get(path, handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, self.host, 0).start()
        return runner

    def _seen(self, request: web.Request) -> None:
        self.requests.append(request.path_qs)

    async def _photo(self, request: web.Request) -> web.Response:
        self._seen(request)
        return web.Response(body=self.photo, content_type="image/png")

    async def _redirect(self, request: web.Request) -> web.Response:
        self._seen(request)
        raise web.HTTPFound(request.query["to"])

    async def _loop(self, request: web.Request) -> web.Response:
        self._seen(request)
        raise web.HTTPFound("/loop")

    async def _huge(self, request: web.Request) -> web.StreamResponse:
        """More bytes than the cap, chunked: no Content-Length to refuse up front."""
        self._seen(request)
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        chunk = b"\0" * 65536
        try:
            for _ in range(self.huge_bytes // len(chunk) + 1):
                await response.write(chunk)
        except (ConnectionResetError, ConnectionError):
            pass  # the gateway hung up at its cap: what we want
        return response

    async def _huge_declared(self, request: web.Request) -> web.StreamResponse:
        self._seen(request)
        response = web.StreamResponse(headers={"Content-Length": str(self.huge_bytes)})
        await response.prepare(request)
        return response  # never sends the body: the header alone must be refused

    async def _slow_body(self, request: web.Request) -> web.StreamResponse:
        """Headers at once, then a byte every 0.4 s: each read is quick, the whole is not."""
        self._seen(request)
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        try:
            await response.prepare(request)  # inside: the fetcher may hang up before the headers go
            for byte in self.photo:
                await response.write(bytes([byte]))
                await asyncio.sleep(0.4)
        except (ConnectionResetError, ConnectionError, asyncio.CancelledError):
            self.disconnects.append(request.path_qs)
        return response

    async def _stalls(self, request: web.Request) -> web.StreamResponse:
        """`?n=` bytes at once, then nothing for 30 s: a body whose first bytes the fetcher holds."""
        self._seen(request)
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        try:
            await response.prepare(request)  # inside: the fetcher may hang up before the headers go
            await response.write(b"\0" * int(request.query["n"]))
            await asyncio.sleep(30)
        except (ConnectionResetError, ConnectionError, asyncio.CancelledError):
            self.disconnects.append(request.path_qs)
        return response

    async def _maybe_gzip(self, request: web.Request) -> web.Response:
        """Compressed for a client that accepts gzip, as many web servers do."""
        self._seen(request)
        accepted = request.headers.get("Accept-Encoding", "")
        self.accept_encodings.append(accepted)
        if "gzip" in accepted:
            body = gzip.compress(self.photo)
            return web.Response(body=body, content_type="image/png", headers={"Content-Encoding": "gzip"})
        return web.Response(body=self.photo, content_type="image/png")

    async def _bad_redirect(self, request: web.Request) -> web.Response:
        self._seen(request)
        return web.Response(status=302, headers={"Location": "http://[::1"})

    async def _slow_headers(self, request: web.Request) -> web.Response:
        self._seen(request)
        await asyncio.sleep(30)
        return web.Response(body=self.photo)

    async def _empty(self, request: web.Request) -> web.Response:
        self._seen(request)
        return web.Response(body=b"", content_type="image/png")

    async def _text(self, request: web.Request) -> web.Response:
        self._seen(request)
        return web.Response(text="<html>not an image</html>", content_type="text/html")

    def close(self) -> None:
        self.run(self.runner.cleanup())
        super().close()


class Canary(LoopThread):
    """Listens on 127.0.0.1 and ::1 (same port where possible) and records every connection.
    Hostile URLs point here; the tests assert it was never reached."""

    def __init__(self) -> None:
        super().__init__("canary")
        self.connections: list[str] = []
        self.ipv6_error = ""
        self.servers: list[asyncio.Server] = self.run(self._start())
        self.port = self.servers[0].sockets[0].getsockname()[1]
        self.port6 = self.servers[1].sockets[0].getsockname()[1] if len(self.servers) > 1 else None

    async def _start(self) -> list[asyncio.Server]:
        async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections.append(str(writer.get_extra_info("peername")))
            writer.close()

        servers = [await asyncio.start_server(record, "127.0.0.1", 0)]
        try:
            servers.append(await asyncio.start_server(record, "::1", 0))
        except OSError as error:  # no IPv6 loopback here: said by test_the_canary_listens_on_ipv6_loopback
            self.ipv6_error = f"cannot listen on [::1]: {error}"
        return servers

    def close(self) -> None:
        for server in self.servers:
            server.close()
        super().close()


class ForwardProxy(LoopThread):
    """A plain HTTP forward proxy on `host`: GET http://name/path is fetched from `upstream[name]`
    (a base URL), and every proxied URL is recorded. For the configured-proxy tests."""

    def __init__(self, host: str, upstream: dict[str, str]) -> None:
        super().__init__("forward-proxy")
        self.upstream = upstream
        self.requests: list[str] = []
        self.runner: web.AppRunner = self.run(self._start(host))
        self.port = self.runner.addresses[0][1]

    async def _start(self, host: str) -> web.AppRunner:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._forward)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, 0).start()
        return runner

    async def _forward(self, request: web.Request) -> web.Response:
        from aiohttp import ClientSession

        target = str(request.url)
        self.requests.append(target)
        base = self.upstream.get(request.url.host or "")
        if base is None:
            return web.Response(status=502, text="unknown upstream")
        async with ClientSession() as session, session.get(base + request.url.path_qs) as answer:
            return web.Response(body=await answer.read(), status=answer.status, content_type=answer.content_type)

    def __enter__(self) -> ForwardProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.run(self.runner.cleanup())
        self.close()
