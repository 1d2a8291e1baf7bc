"""``urllib3``: ``PoolManager`` and ``HTTPConnectionPool`` ``request``/``urlopen`` (both inherit
``request`` from ``RequestMethods``) and the ``urllib3.request`` helper (2.0+)."""

from __future__ import annotations

from . import _common as common
from ._common import Library, http_hook

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)
__asyncguard_work__ = True  # the guard judging or reporting a call (_frames)

HOOKS = (
    http_hook("urllib3", "request", "urllib3.request", common.fmt_method_url, optional=True),
    http_hook(
        "urllib3",
        "PoolManager.request",
        "urllib3.PoolManager.request",
        common.fmt_self_method_url,
        method=True,
    ),
    http_hook(
        "urllib3",
        "PoolManager.urlopen",
        "urllib3.PoolManager.urlopen",
        common.fmt_self_method_url,
        method=True,
    ),
    http_hook(
        "urllib3",
        "HTTPConnectionPool.request",
        "urllib3.HTTPConnectionPool.request",
        common.fmt_self_method_url,
        method=True,
    ),
    http_hook(
        "urllib3",
        "HTTPConnectionPool.urlopen",
        "urllib3.HTTPConnectionPool.urlopen",
        common.fmt_self_method_url,
        method=True,
    ),
)

# 1.0 (2011): PoolManager and HTTPConnectionPool with request/urlopen(method, url, ...), as
# hooked, are there; the urllib3.request helper (2.0) is hooked where it exists.
LIBRARY = Library(
    name="urllib3",
    module="urllib3",
    distributions=("urllib3",),
    minimum="1.0",
    hooks=HOOKS,
)
