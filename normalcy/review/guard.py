"""What every request to the review server passes before a route sees it.

The Host header must name this server (a DNS-rebinding page cannot borrow the browser's
access to 127.0.0.1), the access token must come with it, and a body may be at most
MAX_BODY bytes. Every answer, refusals included, carries headers that keep the page out
of frames and other sites' reach.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["MAX_BODY", "Guard", "cookie_name", "host_names", "is_loopback", "new_token", "validation_error"]

MAX_BODY = 1_000_000  # a label is a few dozen bytes
COOKIE_PREFIX = "normalcy_token"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
WILDCARDS = ("", "0.0.0.0", "::")
CSP = ("default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",  # the page URL holds the token
    "cache-control": "no-store",  # a default: images and static files say otherwise
}
UNAUTHORIZED_PAGE = ("<!doctype html><meta charset='utf-8'><title>normalcy: access token needed</title>"
                     "<p>This page needs the access token: open the URL printed by <code>normalcy serve</code> "
                     "(it ends in <code>?token=...</code>).</p>")


def new_token() -> str:
    """A fresh random access token (the only thing between the page and anyone on the network)."""
    return secrets.token_urlsafe(24)


def cookie_name(port: int) -> str:
    """Cookies ignore ports: two servers on one host need different names, or each logs the other out."""
    return f"{COOKIE_PREFIX}_{port}"


def bracket(host: str) -> str:
    """An IPv6 address as it appears in a URL or Host header."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_names(host: str) -> frozenset[str]:
    """Names the Host header may carry: loopback ones, plus the listen address and this machine's
    name when the server listens beyond loopback. The address a connection arrived at is also
    accepted (see Guard), so http://<this machine's IP>:<port>/ works on the network."""
    names = set(LOOPBACK_NAMES)
    if not is_loopback(host):
        if host not in WILDCARDS:
            names.add(bracket(host))
        names.add(socket.gethostname())
    return frozenset(n.lower() for n in names)


def _split_host(header: str) -> tuple[str, int | None]:
    """'name:port', '[v6]:port' or 'name' -> (name, port or None); port -1 when it is not a number."""
    name, sep, port = header.rpartition(":") if not header.endswith("]") else ("", "", "")
    if not sep:
        return header.lower(), None
    return name.lower(), int(port) if port.isdigit() else -1


def _server(scope: Scope) -> tuple[str, int]:
    server = scope.get("server") or ("", 80)
    return bracket(str(server[0])).lower(), int(server[1] if server[1] is not None else 80)


def server_port(scope: Scope) -> int:
    """The port this request arrived at (the one in the page URL)."""
    return _server(scope)[1]


def validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """422 without echoing the input: a NaN in it would make the error itself unserialisable (a 500)."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    detail = [{"loc": list(e.get("loc", ())), "msg": _short(str(e.get("msg", ""))), "type": str(e.get("type", ""))}
              for e in errors]
    return JSONResponse({"detail": detail}, status_code=422)


def _short(text: str, most: int = 200) -> str:
    """A message cut to ``most`` characters: an invalid value quoted in it may be a megabyte long."""
    return text if len(text) <= most else text[:most] + "..."


class Guard:
    """ASGI middleware: Host check (400), token (401), body cap (413), security headers on every answer; HEAD
    is answered as GET, without the body."""

    def __init__(self, app: ASGIApp, token: str, names: frozenset[str], max_body: int = MAX_BODY) -> None:
        self.app = app
        self.expected = token.encode()
        self.names = names
        self.max_body = max_body

    def _valid(self, candidate: str | None) -> bool:
        return candidate is not None and secrets.compare_digest(candidate.encode(), self.expected)

    def authorised(self, request: Request) -> bool:
        auth = request.headers.get("authorization", "")
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        return (self._valid(request.cookies.get(cookie_name(server_port(request.scope)))) or self._valid(bearer)
                or self._valid(request.query_params.get("token")))

    def host_ok(self, scope: Scope, header: str | None) -> bool:
        if not header:
            return False
        local, port = _server(scope)
        name, given = _split_host(header)
        return (name in self.names or name == local) and (given == port or (given is None and port == 80))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        head = scope["method"] == "HEAD"
        if head:  # a health check's HEAD was 405: it is answered as GET is (headers, status), without the body
            scope = {**scope, "method": "GET"}

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for key, value in SECURITY_HEADERS.items():
                    headers.setdefault(key, value)
            elif head and message["type"] == "http.response.body" and message.get("body"):
                message = {**message, "body": b""}
            await send(message)

        request = Request(scope, receive)
        api = scope["path"].startswith("/api/")
        refusal: Response | None = None
        if not self.host_ok(scope, request.headers.get("host")):
            refusal = JSONResponse({"detail": "unexpected Host header: open the URL printed by normalcy serve"},
                                   status_code=400)
        elif not self.authorised(request):
            refusal = (JSONResponse({"detail": "missing or wrong access token"}, status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
                       if api else HTMLResponse(UNAUTHORIZED_PAGE, status_code=401))
        if refusal is not None:
            await refusal(scope, receive, secured)
            return
        body = await self._read_body(request)
        if isinstance(body, Response):
            await body(scope, receive, secured)
            return
        if body is None:
            return  # the client went away
        await self.app(scope, _replay(body, receive), secured)

    async def _read_body(self, request: Request) -> bytes | Response | None:
        """The whole body, or a 413 (from Content-Length, else once the stream passes the cap)."""
        too_large = JSONResponse({"detail": f"request body over {self.max_body} bytes"}, status_code=413)
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                return JSONResponse({"detail": "bad Content-Length"}, status_code=400)
            if int(declared) > self.max_body:
                return too_large
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return too_large
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the app the body already read, then passes on (e.g. disconnects)."""
    sent = False

    async def replay() -> Any:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
