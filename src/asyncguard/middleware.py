"""``AsyncGuardMiddleware``: a pure ASGI3 middleware that guards each HTTP/WebSocket request.

    application = get_asgi_application()
    application = AsyncGuardMiddleware(application)

The guard is installed when the middleware is built (Django rejects the lifespan protocol, so
there is no start-up event to wait for).  Options come from the keyword arguments, else from
Django's ``ASYNC_GUARD`` setting when Django is set up; ``ASYNC_GUARD_MODE`` in the environment
overrides the mode.  Each violation during a request carries ``"GET /path"`` (never the query
string, headers or body) and the view's dotted name.  With Django's ``DEBUG`` on (or
``debug_header=True``), HTTP responses carry ``X-AsyncGuard-Blocking: <n> calls, <ms> ms``.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any

from . import _config, _env, _install, _offload, _watchdog
from ._loop import get_running_loop
from ._request import RequestInfo, inflight, request_var
from ._types import ASGIApp, Message, Receive, Scope, Send
from .django import conf as django_conf

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)

HEADER = b"x-asyncguard-blocking"


def _django_ready() -> bool:
    if "django" not in sys.modules:
        return False
    try:
        from django.apps import apps
        from django.conf import settings

        return bool(settings.configured and apps.ready)
    except Exception:
        return False


def _handles_in_tasks(app: ASGIApp) -> bool:
    """Django 5.x's ASGIHandler runs each request's middleware chain, view and response in a
    task of its own (besides one that listens for a disconnect) and only awaits it.  (Django
    4.2 and 6.0+ run them in the handler's own coroutine.)"""
    import django
    from django.core.handlers.asgi import ASGIHandler

    return (5, 0) <= django.VERSION < (6, 0) and isinstance(app, ASGIHandler)


def _resolve_view(path: str) -> str | None:
    from django.urls import Resolver404, resolve

    try:
        match = resolve(path)
    except Resolver404:
        return None
    return str(match._func_path)


class AsyncGuardMiddleware:
    """Guard every HTTP and WebSocket request of ``app``; other scopes pass straight through."""

    def __init__(self, app: ASGIApp, *, debug_header: bool | None = None, **options: Any) -> None:
        self.app = app
        debug_header = _config.parse(_config.BY_NAME["debug_header"], debug_header, "debug_header")
        django = _django_ready()
        if django:
            settings_options, settings_header = django_conf.load_options()
            options = {**settings_options, **options}
            if debug_header is None:
                debug_header = settings_header
        # the environment wins: staging flips modes and options without a code change
        options.update(_env.options_from_env())
        options.setdefault("mode", "raise")
        self.guard = _install.install(**options)
        self.debug_header = bool(debug_header)
        self._resolve = _resolve_view if django else None
        # offload mode drives the request's coroutine, or under Django 5.x only the task that
        # runs the view (the handler's own coroutine makes no blocking call)
        self._drive: Callable[[Awaitable[None]], Awaitable[None]] = _offload.offloading
        if django and _handles_in_tasks(app):
            self._drive = _offload.driving_tasks
        self._loop: object = None

    def __repr__(self) -> str:
        return f"AsyncGuardMiddleware({self.app!r}, mode={self.guard.mode!r})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        __tracebackhide__ = __traceback_hide__ = True
        kind = scope.get("type")
        if kind == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        # unknown scopes pass through; a nested guard middleware leaves the request to the
        # outer one, so each violation is counted once
        if (kind != "http" and kind != "websocket") or request_var.get() is not None:
            await self.app(scope, receive, send)
            return
        method = scope.get("method") or ("WEBSOCKET" if kind == "websocket" else "")
        path = scope.get("path")
        info = RequestInfo(
            method=str(method),
            path=path if isinstance(path, str) else "",
            resolve_view=self._resolve,
        )
        if self.debug_header and kind == "http":
            send = self._with_header(send, info)
        token = request_var.set(info)
        frame = sys._getframe()
        inflight[frame] = info  # the stall watchdog finds the request by this frame
        loop = get_running_loop()
        if loop is not self._loop and loop is not None:
            self._loop = loop
            _watchdog.serving(loop)
        try:
            if self.guard.mode == "offload":  # blocking calls may suspend: drive it
                await self._drive(self.app(scope, receive, send))
            else:
                await self.app(scope, receive, send)
        finally:
            del inflight[frame]
            request_var.reset(token)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The server's shutdown is where the final summary goes: uvicorn re-raises SIGTERM
        after a graceful shutdown, so atexit never runs.  An app that speaks lifespan gets it
        unchanged (the summary follows its ``lifespan.shutdown.complete``); for one that
        refuses it or returns before reading a message (Django raises ``ValueError``), the
        middleware answers the protocol itself."""
        __tracebackhide__ = __traceback_hide__ = True
        listened = False

        async def tracked_receive() -> Message:
            __tracebackhide__ = __traceback_hide__ = True
            nonlocal listened
            listened = True
            return await receive()

        async def tracked_send(message: Message) -> None:
            __tracebackhide__ = __traceback_hide__ = True
            await send(message)
            if message.get("type") == "lifespan.shutdown.complete":
                _install.final_summary()

        try:
            await self.app(scope, tracked_receive, tracked_send)
        except Exception:
            if listened:
                raise
        if listened:
            return
        while True:
            message = await receive()
            kind = message.get("type")
            if kind == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif kind == "lifespan.shutdown":
                _install.final_summary()
                await send({"type": "lifespan.shutdown.complete"})
                return

    @staticmethod
    def _with_header(send: Send, info: RequestInfo) -> Send:
        async def send_with_header(message: Message) -> None:
            __tracebackhide__ = __traceback_hide__ = True
            if message.get("type") == "http.response.start":
                value = f"{info.calls} calls, {info.blocked * 1000:.1f} ms".encode("latin-1")
                headers = list(message.get("headers", []))
                headers.append((HEADER, value))
                message = {**message, "headers": headers}
            await send(message)

        return send_with_header
