"""``httpx``: ``Client.send``, which every ``Client`` method (``get``, ``post``, ``stream``...)
goes through, a streamed ``Response.read``, and the module helpers.

``httpx.AsyncClient`` is never touched; a ``Client`` whose transport is a ``MockTransport`` or
``WSGITransport`` does no network I/O and is not flagged.
"""

from __future__ import annotations

import sys

from ..._format import short
from . import _common as common
from ._common import Args, Kwargs, Library, http_hook

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)
__asyncguard_work__ = True  # the guard judging or reporting a call (_frames)


def _fmt_request(args: Args, kwargs: Kwargs) -> str:
    request = common.arg(args, kwargs, 1, "request")
    try:
        return f"<Request({short(request.method)}, {common.url(request.url)})>"
    except Exception:
        return "<request>"


def _send_blocks(args: Args, kwargs: Kwargs) -> bool:
    """An ``httpx.Client`` on a ``MockTransport``/``WSGITransport`` never touches the network."""
    httpx = sys.modules.get("httpx")
    try:
        request = common.arg(args, kwargs, 1, "request")
        transport = args[0]._transport_for_url(request.url)
        in_memory = httpx is not None and isinstance(
            transport, (httpx.MockTransport, httpx.WSGITransport)
        )
    except Exception:
        return True
    return not in_memory


def _read_blocks(args: Args, kwargs: Kwargs) -> bool:
    """Only a streamed response (``client.stream(...)``, ``send(stream=True)``) whose body is
    still unread, on a sync network stream, reads from the socket."""
    httpx = sys.modules.get("httpx")
    try:
        response = args[0]
        if response.is_stream_consumed or httpx is None:
            return False
        stream = response.stream
        return isinstance(stream, httpx.SyncByteStream) and not isinstance(stream, httpx.ByteStream)
    except Exception:
        return False


HOOKS = (
    http_hook(
        "httpx",
        "Client.send",
        "httpx.Client.send",
        _fmt_request,
        method=True,
        would_block=_send_blocks,
    ),
    http_hook(
        "httpx",
        "Response.read",
        "httpx.Response.read",
        common.fmt_none,
        method=True,
        would_block=_read_blocks,
    ),
    http_hook("httpx", "request", "httpx.request", common.fmt_method_url),
    *(http_hook("httpx", verb, f"httpx.{verb}", common.fmt_url) for verb in common.HTTP_VERBS),
)

# 0.18.0 (2021): the predicates read httpx.MockTransport, SyncByteStream and ByteStream, the
# transport and stream API of 0.18 (and Client._transport_for_url, 0.14); with an older httpx
# a client on an in-memory transport would be flagged.
LIBRARY = Library(
    name="httpx",
    module="httpx",
    distributions=("httpx",),
    minimum="0.18.0",
    hooks=HOOKS,
)
