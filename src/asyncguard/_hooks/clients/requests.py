"""``requests``: the module helpers (``requests.get``...; ``requests.api``'s names are the same
objects, swapped too) and ``Session.request``/``send``, which every session call goes through.

``requests.get`` -> ``Session.request`` -> urllib3 -> socket reports once, at ``requests.get``.
"""

from __future__ import annotations

from . import _common as common
from ._common import Args, Kwargs, Library, http_hook

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)
__asyncguard_work__ = True  # the guard judging or reporting a call (_frames)


def _fmt_prepared(args: Args, kwargs: Kwargs) -> str:
    request = common.arg(args, kwargs, 1, "request")
    try:
        return f"<{type(request).__name__} [{request.method}] {common.url(request.url)}>"
    except Exception:
        return "<request>"


HOOKS = (
    http_hook("requests", "request", "requests.request", common.fmt_method_url),
    *(
        http_hook("requests", verb, f"requests.{verb}", common.fmt_url)
        for verb in common.HTTP_VERBS
    ),
    http_hook(
        "requests",
        "Session.request",
        "requests.Session.request",
        common.fmt_self_method_url,
        method=True,
    ),
    http_hook("requests", "Session.send", "requests.Session.send", _fmt_prepared, method=True),
)

# 1.0.0 (2012): Session.send and PreparedRequest, which the send hook and its formatter read,
# arrived then; the helpers and Session.request are older.
LIBRARY = Library(
    name="requests",
    module="requests",
    distributions=("requests",),
    minimum="1.0.0",
    hooks=HOOKS,
)
