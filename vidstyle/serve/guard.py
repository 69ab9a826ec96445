"""ASGI middleware in front of every route: the bearer token, the size limit of a request's body, and the app's own
say on whether to take a request at all (a full disk, a full queue), all before a byte of the body is read.

Plain ASGI rather than Starlette's BaseHTTPMiddleware: it adds no task per request (the latency of GET job stays
that of the route) and it can stop an upload while it streams in, before the multipart parser spools it to disk.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vidstyle.errors import shortened

COOKIE = "vidstyle_token"


class _TooLarge(BaseException):
    """Raised from inside `receive`; a BaseException so that the form parser's `except Exception` cannot turn it
    into a generic 400 on the way out."""


@dataclass(frozen=True)
class Refusal:
    """A request turned away before its body is read: HTTP status, the one-line detail, extra headers."""

    status: int
    detail: str
    headers: tuple[tuple[bytes, bytes], ...] = ()


async def send_json(send: Send, status: int, body: dict[str, Any], headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": data})


# Methods that change something: a browser sends these across sites without asking the server first (a form's
# POST needs no CORS preflight), so where they come from is checked.
_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class Guard:
    """`hosts`: the names a request may address a server without a token by (one on a loopback address, which a web
    page's script could otherwise reach through a name of its own that resolves there); None: any."""

    def __init__(self, app: ASGIApp, max_upload: int, token: str | None,
                 admit: Callable[[Scope], Refusal | None] | None = None,
                 hosts: frozenset[str] | None = None) -> None:
        self.app, self.max_upload, self.token, self.admit, self.hosts = app, max_upload, token, admit, hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.token is None:
            # Without a token, what a browser sends tells another site's page from this server's own: with one, such a
            # page has neither the token nor its cookie (SameSite), and a reverse proxy may name the server otherwise.
            refusal = self._foreign(scope)
            if refusal is not None:
                await send_json(send, refusal.status, {"detail": refusal.detail, "field": None})
                return
        elif not await self._authorized(scope, send, self.token):
            return
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_upload:
            await send_json(send, 413, self._too_large())  # refused before a byte of the body is read
            return
        refusal = self.admit(scope) if self.admit is not None else None
        if refusal is not None:
            # Here rather than in the route: FastAPI calls a route only once the multipart parser has read and
            # spooled the whole upload, the very transfer and disk space that this refusal is to spare.
            await send_json(send, refusal.status, {"detail": refusal.detail, "field": None}, list(refusal.headers))
            return
        await self._limited(scope, receive, send)

    def _foreign(self, scope: Scope) -> Refusal | None:
        """A request that a web page of another site made a browser send: to a loopback server by a name of its own
        (DNS rebinding, 421), or one that would change jobs from another Origin (a form's POST needs no preflight,
        403). Clients that are not browsers (curl, scripts) send no Origin, and a Host that is the server's."""
        host = _header(scope, b"host")
        if self.hosts is not None and host is not None and _host_name(host) not in self.hosts:
            names = " or ".join(sorted(self.hosts))
            return Refusal(421, f"this server is not {shortened(host)!r}; address it as {names}")
        origin = _header(scope, b"origin")
        if scope["method"] in _CHANGING and origin is not None and _origin_host(origin) != (host or "").lower():
            return Refusal(403, f"a request from another site ({shortened(origin)}) may not change jobs")
        return None

    def _too_large(self) -> dict[str, Any]:
        # Counted over the whole request (its video and its style picture together): no one field is to blame.
        return {"detail": f"upload too large: a request's files may hold {self.max_upload / 1e6:g} MB together "
                          f"(the server's max_upload setting)", "field": None}

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Count the body as it arrives: a chunked upload has no Content-Length to check first."""
        received, started = 0, False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_upload:
                raise _TooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await send_json(send, 413, self._too_large())

    @staticmethod
    async def _authorized(scope: Scope, send: Send, token: str) -> bool:
        """`Authorization: Bearer <token>`, or the cookie a browser got by opening a page with `?token=`."""
        given = _bearer(scope) or _cookie(scope)
        if given is not None and hmac.compare_digest(given.encode(), token.encode()):
            return True
        params = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        query = next((value for name, value in params if name == "token"), None)
        if scope["method"] == "GET" and query and hmac.compare_digest(query.encode(), token.encode()):
            # A browser cannot send headers with <img>, <video> or EventSource: it keeps the token as a cookie,
            # sent only to this site (SameSite=Lax: also when a link on another site opens a page here, as the
            # redirect itself does when such a link carries the token; never with another site's POST), and the
            # token leaves the address bar (the rest of the query stays).
            cookie = f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax"
            rest = urlencode([(name, value) for name, value in params if name != "token"])
            # One leading slash: "//host/" would send the browser to another site.
            location = "/" + quote(scope["path"]).lstrip("/") + (f"?{rest}" if rest else "")
            await send({"type": "http.response.start", "status": 303,
                        "headers": [(b"location", location.encode()), (b"set-cookie", cookie.encode()),
                                    (b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return False
        await send_json(send, 401, {"detail": "this server needs a bearer token (Authorization: Bearer <token>; in "
                                              "a browser, open /?token=<token> once)", "field": None},
                        [(b"www-authenticate", b"Bearer")])
        return False


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def _bearer(scope: Scope) -> str | None:
    value = _header(scope, b"authorization")
    if value is None or not value.lower().startswith("bearer "):
        return None
    return value[7:].strip()


def _cookie(scope: Scope) -> str | None:
    value = _header(scope, b"cookie")
    # Starlette's lenient parser, as a browser sends them: another program's cookie on this host (cookies are not
    # kept apart by port) that the standard library's strict parser stops at must not hide this one.
    return cookie_parser(value).get(COOKIE) if value is not None else None


def _host_name(host: str) -> str | None:
    """The name in a Host header ("127.0.0.1:8000", "[::1]:8000"), lower case, without the port."""
    try:
        return urlsplit(f"//{host}").hostname
    except ValueError:
        return None


def _origin_host(origin: str) -> str | None:
    """host[:port] of an Origin header, as a Host header of the same site says it; None for "null"."""
    try:
        return urlsplit(origin).netloc.lower() or None
    except ValueError:
        return None
