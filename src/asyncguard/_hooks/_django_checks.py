"""``would_block`` predicates and message arguments for the django family (slow path only).

Nothing here imports Django: the classes are recognised by their modules, and Django modules
are read from ``sys.modules`` (a hooked method can only run once its module is imported).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from .._format import positional, short

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)
__asyncguard_work__ = True  # the guard judging or reporting a call (_frames)

Args = tuple[Any, ...]
Kwargs = dict[str, Any]


def _arg(args: Args, kwargs: Kwargs, index: int, name: str, default: Any = None) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _modules(obj: Any) -> Iterable[str]:
    return (getattr(cls, "__module__", "") for cls in type(obj).__mro__)


def always(args: Args, kwargs: Kwargs) -> bool:
    return True


def never(args: Args, kwargs: Kwargs) -> bool:
    return False


def no_args(args: Args, kwargs: Kwargs) -> str:
    return ""


def elided(args: Args, kwargs: Kwargs) -> str:
    """Passwords and credentials are never shown."""
    return "…"


# -- database ------------------------------------------------------------------------------------

_COMPILER_KINDS = {
    "SQLInsertCompiler": "INSERT",
    "SQLUpdateCompiler": "UPDATE",
    "SQLDeleteCompiler": "DELETE",
}


def query_runs(args: Args, kwargs: Kwargs) -> bool:
    """``Model.objects.none()`` (an empty ``WHERE``) never reaches the database."""
    return not args[0].query.is_empty()


def fmt_query(args: Args, kwargs: Kwargs) -> str:
    """``SELECT shop.Order``: the statement kind and the model, never the SQL's values."""
    compiler = args[0]
    kind = "SELECT"
    for cls in type(compiler).__mro__:
        if cls.__name__ in _COMPILER_KINDS:
            kind = _COMPILER_KINDS[cls.__name__]
            break
    model = getattr(compiler.query, "model", None)
    label = getattr(getattr(model, "_meta", None), "label", None)
    return f"{kind} {label}" if label else kind


def not_connected(args: Args, kwargs: Kwargs) -> bool:
    """``connection.cursor()`` connects first when this thread has no open connection."""
    return getattr(args[0], "connection", None) is None


def fmt_connect(args: Args, kwargs: Kwargs) -> str:
    return "connect"


def fmt_begin(args: Args, kwargs: Kwargs) -> str:
    return "BEGIN"


def fmt_end(args: Args, kwargs: Kwargs) -> str:
    return "COMMIT" if _arg(args, kwargs, 1, "exc_type") is None else "ROLLBACK"


# -- cache ---------------------------------------------------------------------------------------

BLOCKING_CACHES = frozenset(
    {
        "django.core.cache.backends.filebased",
        "django.core.cache.backends.db",
        "django.core.cache.backends.redis",
        "django.core.cache.backends.memcached",
    }
)


def cache_is_blocking(cache: Any) -> bool:
    """File, database, Redis and memcached caches do I/O; the local-memory and dummy caches
    (and third-party backends, whose own clients are hooked where they are) are not judged."""
    return any(module in BLOCKING_CACHES for module in _modules(cache))


def cache_blocks(args: Args, kwargs: Kwargs) -> bool:
    return cache_is_blocking(args[0])


def fmt_key(args: Args, kwargs: Kwargs) -> str:
    """The cache key or file name, never the value stored."""
    return positional(args, skip=1, limit=1)


# -- storage -------------------------------------------------------------------------------------


def storage_blocks(args: Args, kwargs: Kwargs) -> bool:
    """Every storage but ``InMemoryStorage`` does file or network I/O."""
    return all(module != "django.core.files.storage.memory" for module in _modules(args[0]))


# -- sessions ------------------------------------------------------------------------------------

_SESSIONS = "django.contrib.sessions.backends."
SESSION_KEY = "_auth_user_id"  # django.contrib.auth.SESSION_KEY


def session_is_blocking(store: Any) -> bool:
    for module in _modules(store):
        if module == _SESSIONS + "signed_cookies":
            return False  # the data is in the cookie
        if module == _SESSIONS + "cache":
            return cache_is_blocking(getattr(store, "_cache", None))
        if module.startswith(_SESSIONS) and module != _SESSIONS + "base":
            return True  # db, file, cached_db (a cache miss reads the database)
    return True  # a third-party store: a database or a server


def session_blocks(args: Args, kwargs: Kwargs) -> bool:
    return session_is_blocking(args[0])


# -- auth ----------------------------------------------------------------------------------------


def _user_lookup_blocks(request: Any) -> bool:
    """Finding the user reads the session (unless loaded already or there is no session
    cookie) and then the user from the database (only if the session names one)."""
    session = getattr(request, "session", None)
    if session is None:
        return False
    try:
        data = session._session_cache
    except AttributeError:
        return session.session_key is not None
    return SESSION_KEY in data


def user_blocks(args: Args, kwargs: Kwargs) -> bool:
    """The lazy ``request.user`` (``auth.middleware.get_user``), evaluated once per request."""
    request = _arg(args, kwargs, 0, "request")
    return not hasattr(request, "_cached_user") and _user_lookup_blocks(request)


def get_user_blocks(args: Args, kwargs: Kwargs) -> bool:
    return _user_lookup_blocks(_arg(args, kwargs, 0, "request"))


def fmt_request(args: Args, kwargs: Kwargs) -> str:
    return "request"  # never the request's repr: it holds the query string


def fmt_login(args: Args, kwargs: Kwargs) -> str:
    return "request, user"


def makes_hash(args: Args, kwargs: Kwargs) -> bool:
    """``make_password(None)`` makes an unusable password without hashing."""
    return _arg(args, kwargs, 0, "password") is not None


def user_makes_hash(args: Args, kwargs: Kwargs) -> bool:
    return _arg(args, kwargs, 1, "raw_password") is not None


# -- templates -----------------------------------------------------------------------------------


def _loader_reads(loader: Any, name: str, skip: Any) -> bool | None:
    """True: this loader reads files for ``name``; False: it serves it from memory; None: it
    does not have it (without reading), the next loader is asked."""
    module = type(loader).__module__
    if module == "django.template.loaders.cached":
        cached = loader.get_template_cache.get(loader.cache_key(name, skip))
        if not cached:
            return _loaders_read(loader.loaders, name, skip)
        if isinstance(cached, (type, BaseException)):
            return None  # a cached TemplateDoesNotExist
        return False
    if module == "django.template.loaders.locmem":
        return False if name in loader.templates_dict else None
    return True  # filesystem, app_directories, third-party loaders


def _loaders_read(loaders: Iterable[Any], name: str, skip: Any) -> bool | None:
    for loader in loaders:
        state = _loader_reads(loader, name, skip)
        if state is not None:
            return state
    return None


def _backend_reads(backend: Any, name: str) -> bool | None:
    engine: Any = getattr(backend, "engine", None)
    if type(engine).__module__ != "django.template.engine":
        return True  # Jinja2 and other engines check their files
    return _loaders_read(engine.template_loaders, name, None)


def _names_read(names: Iterable[Any], using: Any) -> bool:
    template = sys.modules.get("django.template")
    if template is None:
        return True
    backends = template.engines.all() if using is None else [template.engines[using]]
    for name in names:
        for backend in backends:
            state = _backend_reads(backend, name)
            if state is not None:
                return state
    return False  # not found anywhere, and nothing was read to find out


def get_template_reads(args: Args, kwargs: Kwargs) -> bool:
    return _names_read([_arg(args, kwargs, 0, "template_name")], _arg(args, kwargs, 1, "using"))


def select_template_reads(args: Args, kwargs: Kwargs) -> bool:
    names = _arg(args, kwargs, 0, "template_name_list")
    if isinstance(names, str):
        return False  # TypeError, raised by Django
    return _names_read(list(names), _arg(args, kwargs, 1, "using"))


def _name_or_names_read(name: Any, using: Any) -> bool:
    return _names_read(list(name) if isinstance(name, (list, tuple)) else [name], using)


def render_to_string_reads(args: Args, kwargs: Kwargs) -> bool:
    return _name_or_names_read(
        _arg(args, kwargs, 0, "template_name"), _arg(args, kwargs, 3, "using")
    )


def render_reads(args: Args, kwargs: Kwargs) -> bool:
    return _name_or_names_read(
        _arg(args, kwargs, 1, "template_name"), _arg(args, kwargs, 5, "using")
    )


def find_template_reads(args: Args, kwargs: Kwargs) -> bool:
    """``Engine.find_template(name, dirs, skip)``: ``{% include %}``/``{% extends %}`` and
    every Django template lookup."""
    engine, name = args[0], _arg(args, kwargs, 1, "name")
    return bool(_loaders_read(engine.template_loaders, name, _arg(args, kwargs, 3, "skip")))


def fmt_template(args: Args, kwargs: Kwargs) -> str:
    return short(_arg(args, kwargs, 0, "template_name"))


def fmt_select(args: Args, kwargs: Kwargs) -> str:
    return short(_arg(args, kwargs, 0, "template_name_list"))


def fmt_render(args: Args, kwargs: Kwargs) -> str:
    return "request, " + short(_arg(args, kwargs, 1, "template_name"))


def fmt_find_template(args: Args, kwargs: Kwargs) -> str:
    return short(_arg(args, kwargs, 1, "name"))


# -- mail ----------------------------------------------------------------------------------------


def has_messages(args: Args, kwargs: Kwargs) -> bool:
    return bool(_arg(args, kwargs, 1, "email_messages"))


def fmt_messages(args: Args, kwargs: Kwargs) -> str:
    messages = _arg(args, kwargs, 1, "email_messages")
    count = len(messages) if isinstance(messages, (list, tuple)) else 1
    return f"[{count} message{'' if count == 1 else 's'}]"


def fmt_subject(args: Args, kwargs: Kwargs) -> str:
    subject = _arg(args, kwargs, 0, "subject")
    return short(subject) + ", …" if subject is not None else "…"


def fmt_mass_mail(args: Args, kwargs: Kwargs) -> str:
    data = _arg(args, kwargs, 0, "datatuple")
    try:
        count = len(data)
    except TypeError:
        return "…"
    return f"[{count} message{'' if count == 1 else 's'}]"
