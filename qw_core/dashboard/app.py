"""The dashboard as an ASGI application: :func:`create_app`.

Pages are rendered on the server (:mod:`qw_core.dashboard.render`); the live parts of a
page (``data-live`` regions) are refreshed by server-sent events (``/events``) that carry
the region's HTML, rendered by the same template, whenever it changes; a dozen lines of
our own JavaScript (``static/dashboard.js``) swap it in. No page reloads, no JavaScript
library, no build step.

Broker calls block, so the pages are plain functions that Starlette runs in its thread
pool, and each thread opens its own broker from the factory (a broker serves one thread).

What qw does differently from the dashboards its users know: rq-dashboard and Sidekiq's
web UI read their stores directly; this one reads the broker interface only, so it works
on every backend, and a page costs one bounded range of each listing it shows.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

import anyio
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from qw_core.broker import Administrator
from qw_core.dashboard import failed, reads, render
from qw_core.dashboard.guard import Guard
from qw_core.dashboard.security import CSRF_FIELD, Auth
from qw_core.errors import InvalidName, QwError
from qw_core.models import State

log = logging.getLogger("qw.dashboard")

#: Seconds between two renders of a live region.
LIVE_EVERY = 2.0
#: Seconds one event stream lasts before the browser is asked to reconnect (a stream is
#: not held for ever by a tab left open).
STREAM_FOR = 300.0
#: The largest form body read, in bytes (a selection of a few thousand ids).
MAX_FORM = 1 << 20


class _Brokers:
    """One broker per thread, from the factory; closed when the application stops."""

    def __init__(self, factory: Callable[[], Administrator], *, close: bool) -> None:
        self._factory = factory
        self._local = threading.local()
        self._lock = threading.Lock()
        self._opened: list[Administrator] = []
        self._close = close

    def get(self) -> Administrator:
        broker: Administrator | None = getattr(self._local, "broker", None)
        if broker is None:
            broker = self._local.broker = self._factory()
            with self._lock:
                self._opened.append(broker)
        return broker

    def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        if self._close:
            for broker in opened:
                with contextlib.suppress(Exception):
                    broker.close()


class _Dashboard:
    """The pages, with what they share: the brokers, the templates and the settings."""

    def __init__(self, brokers: _Brokers, *, read_only: bool, live_every: float, stream: bool) -> None:
        self.brokers = brokers
        self.read_only = read_only
        self.live_every = live_every
        self.stream = stream
        self.env = render.environment()

    # -- rendering -------------------------------------------------------------------

    def page(self, request: Request, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        return HTMLResponse(self.html(request, template, **values), status_code=status)

    def html(self, request: Request, template: str, **values: Any) -> str:
        root = request.scope.get("root_path", "")
        context = {
            "u": lambda path, **params: render.url(root, path, **params),
            "csrf": request.scope.get("state", {}).get("csrf", ""),
            "csrf_field": CSRF_FIELD,
            "read_only": self.read_only,
            "backend": self.brokers.get().describe(),
            "now": time.time(),
            "path": request.url.path,
            "notice": _notice(request.query_params.get("notice", "")),
            "State": State,
            "active": "",
            **values,
        }
        return self.env.get_template(template).render(context)

    def guarded(self, request: Request, build: Callable[[Administrator], Response]) -> Response:
        """``build``'s page; a broker error as a page that says what went wrong."""
        try:
            return build(self.brokers.get())
        except (InvalidName, ValueError) as exc:
            return self.page(request, "error.html", status=400, message=str(exc))
        except QwError as exc:
            return self.page(request, "error.html", status=503, message=str(exc))

    # -- pages -----------------------------------------------------------------------

    def overview(self, request: Request) -> Response:
        return self.guarded(
            request, lambda b: self.page(request, "overview.html", view=reads.overview(b), active="overview")
        )

    def queue(self, request: Request) -> Response:
        label = request.query_params.get("name", "default")
        kind = "delayed" if request.query_params.get("kind") == "delayed" else "queued"
        offset = _int(request.query_params.get("offset"))
        return self.guarded(
            request,
            lambda b: self.page(
                request,
                "queue.html",
                view=reads.queue_page(b, label, kind=kind, offset=offset),
                active="overview",
            ),
        )

    def job(self, request: Request) -> Response:
        job_id = request.query_params.get("id", "")
        return self.guarded(
            request, lambda b: self.page(request, "job.html", state=reads.job_state(b, job_id), active="")
        )

    def failed_list(self, request: Request) -> Response:
        which = _filter(request.query_params)
        offset = _int(request.query_params.get("offset"))

        def build(broker: Administrator) -> Response:
            found = failed.page(broker, which, offset)
            queues = ["default", *broker.named_queues(), *(f"manager:{m}" for m in broker.managers())]
            return self.page(
                request,
                "failed.html",
                view=found,
                which=which,
                queues=queues,
                page_size=failed.PAGE,
                active="failed",
            )

        return self.guarded(request, build)

    def delayed(self, request: Request) -> Response:
        label = request.query_params.get("name") or None
        offset = _int(request.query_params.get("offset"))
        return self.guarded(
            request,
            lambda b: self.page(
                request, "delayed.html", view=reads.delayed_overview(b, label, offset), active="delayed"
            ),
        )

    def schedules(self, request: Request) -> Response:
        return self.guarded(
            request,
            lambda b: self.page(
                request,
                "schedules.html",
                schedules=b.schedules(),
                keeps_schedules=b.capabilities.schedules,
                active="schedules",
            ),
        )

    # -- actions ---------------------------------------------------------------------

    def failed_action(self, request: Request, form: dict[str, list[str]]) -> Response:
        """Requeue or delete failed jobs: one, a selection, or all matching a filter.

        Without ``confirmed``, shows what would be done and asks; with it, does it and
        goes back to where the action came from, saying what was done.
        """
        action, _, scope = _one(form, "do").partition(":")
        ids = [job_id for job_id in form.get("id", []) if job_id]
        which = failed.Filter(exc_type=_one(form, "exc").strip(), queue=_one(form, "queue").strip())
        back = _one(form, "back")
        if not back.startswith("/") or back.startswith("//") or "\\" in back:
            back = "/failed"  # only a page of the dashboard
        if action not in ("requeue", "delete") or scope not in ("selected", "all"):
            return self.page(request, "error.html", status=400, message="unknown action")
        if scope == "selected" and not ids:
            return self.page(request, "error.html", status=400, message="no failed job selected")

        def build(broker: Administrator) -> Response:
            if not _one(form, "confirmed"):
                count = len(set(ids)) if scope == "selected" else failed.count(broker, which)
                return self.page(
                    request,
                    "confirm.html",
                    action=action,
                    scope=scope,
                    ids=ids,
                    which=which,
                    count=count,
                    back=back,
                    active="failed",
                )
            if scope == "selected":
                done = (
                    failed.requeue_ids(broker, ids) if action == "requeue" else failed.delete_ids(broker, ids)
                )
            elif action == "requeue":
                done = failed.requeue_matching(broker, which)
            else:
                done = failed.delete_matching(broker, which)
            verb = "requeued" if action == "requeue" else "deleted"
            notice = f"{verb} {done} failed job{'s' if done != 1 else ''}"
            root = request.scope.get("root_path", "")
            sep = "&" if "?" in back else "?"
            return RedirectResponse(f"{root}{back}{sep}notice={notice.replace(' ', '+')}", status_code=303)

        return self.guarded(request, build)

    # -- live regions ----------------------------------------------------------------

    def fragment(self, request: Request) -> str:
        """The HTML of the live region ``view`` names, as its page renders it."""
        params = request.query_params
        view = params.get("view", "")
        broker = self.brokers.get()
        try:
            if view == "overview":
                return self.html(request, "_overview.html", view=reads.overview(broker))
            if view == "queue":
                kind = "delayed" if params.get("kind") == "delayed" else "queued"
                found = reads.queue_page(
                    broker, params.get("name", "default"), kind=kind, offset=_int(params.get("offset"))
                )
                return self.html(request, "_queue.html", view=found)
            if view == "job":
                return self.html(request, "_job.html", state=reads.job_state(broker, params.get("id", "")))
        except (QwError, ValueError) as exc:
            return self.html(request, "_trouble.html", message=str(exc))
        return self.html(request, "_trouble.html", message=f"no live view {view!r}")

    async def events(self, request: Request) -> Response:
        """Server-sent events: the live region's HTML (event ``update``) when it changed.

        Streaming, a render every :data:`LIVE_EVERY` seconds for :data:`STREAM_FOR`
        seconds; else (``stream=False``, for a WSGI server whose threads a stream would
        hold) one event per request, the browser reconnecting after ``retry``: polling. An
        event's id is a digest of its HTML, which a reconnecting browser sends back
        (``Last-Event-ID``), so an unchanged region is not sent again.
        """
        last = request.headers.get("last-event-id")
        retry_ms = int(self.live_every * 1000)

        async def stream() -> AsyncIterator[str]:
            nonlocal last
            yield f"retry: {retry_ms}\n\n"
            ends = time.monotonic() + STREAM_FOR
            while True:
                try:
                    html = await run_in_threadpool(self.fragment, request)
                except Exception:  # the stream goes on: the next render may work
                    log.exception("the dashboard could not render a live region")
                    html = "<p class='trouble'>the dashboard could not render this part (see its log)</p>"
                digest = hashlib.blake2b(html.encode(), digest_size=12).hexdigest()
                if digest != last:
                    last = digest
                    data = "".join(f"data: {line}\n" for line in html.splitlines() or [""])
                    yield f"id: {digest}\nevent: update\n{data}\n"
                if not self.stream or time.monotonic() > ends:
                    return
                await anyio.sleep(self.live_every)

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


#: The notices an action leaves (anything else in ``?notice=`` is not shown: a link from
#: elsewhere cannot put words in the dashboard's mouth).
_NOTICE = re.compile(r"(requeued|deleted) [0-9]+ failed jobs?")


def _notice(text: str) -> str:
    return text if _NOTICE.fullmatch(text) else ""


def _int(text: str | None) -> int:
    try:
        return max(0, int(text or 0))
    except ValueError:
        return 0


def _one(form: dict[str, list[str]], key: str) -> str:
    values = form.get(key)
    return values[0] if values else ""


def _filter(params: Any) -> failed.Filter:
    return failed.Filter(
        exc_type=(params.get("exc") or "").strip(), queue=(params.get("queue") or "").strip()
    )


async def _form(request: Request) -> dict[str, list[str]] | None:
    """The urlencoded body of ``request`` (``None``: too large or not a form)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            return None
    return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)


def create_app(
    factory: Callable[[], Administrator],
    *,
    auth: Auth | None = None,
    read_only: bool = False,
    live_every: float = LIVE_EVERY,
    stream: bool = True,
    close_brokers: bool = True,
) -> Starlette:
    """The dashboard as an ASGI application, to serve (``qw dashboard``, uvicorn) or to
    mount in another one (``Mount("/qw", create_app(...))``).

    :param factory: opens a broker (called once per thread that serves requests): a
        backend's ``Broker.factory()``, or ``lambda: RedisBroker.from_url(URL)``.
    :param auth: the credentials every request must present (:class:`Auth`); ``None`` or
        an empty one: none (listen on a loopback address only, then).
    :param read_only: show, never act: the action buttons are not shown, and every
        action is refused (403).
    :param live_every: seconds between two refreshes of a page's live regions.
    :param stream: keep event streams open; ``False`` for a WSGI server (see
        :func:`qw_core.dashboard.wsgi_app`): each refresh is a request of its own.
    :param close_brokers: close the brokers opened from ``factory`` when the application
        stops (not for a factory that returns a broker its caller owns).
    """
    brokers = _Brokers(factory, close=close_brokers)
    dashboard = _Dashboard(brokers, read_only=read_only, live_every=live_every, stream=stream)

    async def action(request: Request) -> Response:
        # The guard has checked the CSRF token and the origin of every POST already.
        if dashboard.read_only:
            return dashboard.page(request, "error.html", status=403, message="the dashboard is read-only")
        form = request.scope["state"]["form"]
        return await run_in_threadpool(dashboard.failed_action, request, form)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        brokers.close()

    static = StaticFiles(directory=str(resources.files("qw_core.dashboard") / "static"))
    routes = [
        Route("/", dashboard.overview),
        Route("/queue", dashboard.queue),
        Route("/job", dashboard.job),
        Route("/failed", dashboard.failed_list),
        Route("/failed/action", action, methods=["POST"]),
        Route("/delayed", dashboard.delayed),
        Route("/schedules", dashboard.schedules),
        Route("/events", dashboard.events),
        Mount("/static", static, name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(Guard, auth=auth or Auth(), read_form=_form, login_page=_login_renderer(dashboard))
    return app


def _login_renderer(dashboard: _Dashboard) -> Callable[[Request, str], str]:
    def login(request: Request, message: str) -> str:
        return dashboard.env.get_template("login.html").render(
            u=lambda path, **params: render.url(request.scope.get("root_path", ""), path, **params),
            csrf=request.scope.get("state", {}).get("csrf", ""),
            csrf_field=CSRF_FIELD,
            next=request.query_params.get("next", "/"),
            message=message,
        )

    return login
