"""The ASGI middleware in front of every page: authentication, CSRF and the security
headers (see :mod:`qw_core.dashboard.security` for the rules it applies).

Every response carries a Content-Security-Policy that allows scripts and styles from the
dashboard itself only (no inline script runs, even one that escaping missed), and may not
be framed. A POST reaches the application only with its form read, its CSRF token and its
origin checked; the form is handed on in ``scope["state"]["form"]``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qw_core.dashboard.security import (
    CSRF_COOKIE,
    CSRF_FIELD,
    SESSION_COOKIE,
    Auth,
    check_post,
    new_csrf_token,
)

#: The headers of every response.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
}

FormReader = Callable[[Request], Awaitable[dict[str, list[str]] | None]]
LoginPage = Callable[[Request, str], str]


class Guard:
    """Authenticate, check POSTs, set the CSRF cookie and the security headers.

    :param app: the dashboard's routes.
    :param auth: what a request must present.
    :param read_form: reads a POST's urlencoded form (``None``: not one, or too large).
    :param login_page: renders the token login form with a message.
    """

    def __init__(self, app: ASGIApp, *, auth: Auth, read_form: FormReader, login_page: LoginPage) -> None:
        self.app = app
        self.auth = auth
        self.read_form = read_form
        self.login_page = login_page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        root = scope.get("root_path", "")
        path = scope["path"][len(root) :] if scope["path"].startswith(root) else scope["path"]
        csrf = request.cookies.get(CSRF_COOKIE)
        fresh = None if csrf else new_csrf_token()
        scope.setdefault("state", {})["csrf"] = csrf or fresh
        send = self._with_headers(send, fresh, root or "/")
        if path.startswith("/static/"):
            await self.app(scope, receive, send)
            return
        response: Response | None
        if path == "/login":
            response = await self._login(request, root)
        elif not self.auth.allows(request.headers.get("authorization"), request.cookies.get(SESSION_COOKIE)):
            response = self._unauthenticated(request, root, path)
        elif request.method == "POST":
            response = await self._check_post(request)
        elif request.method not in ("GET", "HEAD"):
            response = PlainTextResponse("method not allowed", status_code=405)
        else:
            response = None
        if response is not None:
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _check_post(self, request: Request) -> Response | None:
        form = await self.read_form(request)
        if form is None:
            return PlainTextResponse(
                "an action must be a form (application/x-www-form-urlencoded)", status_code=400
            )
        field = form.get(CSRF_FIELD, [""])[0]
        refused = check_post(
            cookie=request.cookies.get(CSRF_COOKIE),
            field=field,
            origin=request.headers.get("origin"),
            referer=request.headers.get("referer"),
            host=request.headers.get("host"),
        )
        if refused is not None:
            return PlainTextResponse(f"refused: {refused}", status_code=403)
        request.scope["state"]["form"] = form
        return None

    def _unauthenticated(self, request: Request, root: str, path: str) -> Response:
        if self.auth.basic or path == "/events" or request.method != "GET":
            headers = (
                {"www-authenticate": 'Basic realm="qw dashboard", charset="UTF-8"'} if self.auth.basic else {}
            )
            return PlainTextResponse("authentication required", status_code=401, headers=headers)
        wanted = path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"{root}/login?next={quote(wanted, safe='')}", status_code=303)

    async def _login(self, request: Request, root: str) -> Response:
        """The token login form (GET), and its answer (POST): a session cookie."""
        if self.auth.token is None:
            return PlainTextResponse(
                "no token is configured: there is nothing to log in with", status_code=404
            )
        if request.method != "POST":
            return HTMLResponse(self.login_page(request, ""))
        refused = await self._check_post(request)
        if refused is not None:
            return refused
        form = request.scope["state"]["form"]
        if not self.auth.token_matches(form.get("token", [""])[0]):
            return HTMLResponse(self.login_page(request, "That is not the token."), status_code=401)
        wanted = form.get("next", ["/"])[0]
        if not wanted.startswith("/") or wanted.startswith("//") or "\\" in wanted:
            wanted = "/"
        response = RedirectResponse(f"{root}{wanted}", status_code=303)
        response.set_cookie(
            SESSION_COOKIE, self.auth.session_value(), httponly=True, samesite="strict", path=root or "/"
        )
        return response

    @staticmethod
    def _with_headers(send: Send, fresh_csrf: str | None, cookie_path: str) -> Send:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[Any] = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in SECURITY_HEADERS.items():
                    if name.encode() not in present:
                        headers.append((name.encode(), value.encode()))
                if fresh_csrf is not None:
                    cookie = f"{CSRF_COOKIE}={fresh_csrf}; Path={cookie_path}; HttpOnly; SameSite=Strict"
                    headers.append((b"set-cookie", cookie.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        return sending
