"""Django internals that block: the ORM, caches, storage, templates, sessions, mail and auth.

Every hook is applied when its Django module is imported (asyncguard never imports Django).
Call keys, all with category ``"django"``:

- ``"django.db.query"``: any database access through Django on a loop thread: ORM queries
  (``SQLCompiler.execute_sql``: ``get``, ``count``, ``list(qs)``, ``save``, lazy relations...),
  raw ``cursor.execute``/``executemany``/``callproc``, ``transaction.atomic`` (``BEGIN``,
  ``COMMIT``/``ROLLBACK``) and ``connection.cursor()`` when it has to connect.  This is below
  Django's ``async_unsafe`` check, so it reports queries that ``DJANGO_ALLOW_ASYNC_UNSAFE`` lets
  run (and, without it, names the query before Django refuses it: in raise mode the error is
  then also Django's ``SynchronousOnlyOperation``, its message Django's sentence followed by
  ours, as for the session, database-cache and auth calls that query).
  ``BaseDatabaseWrapper.ensure_connection`` is never patched (pytest-django swaps it).
- ``"django.utils.asyncio.async_unsafe"``: Django raised ``SynchronousOnlyOperation`` on a loop
  thread for a call no other hook judged (a third-party ``@async_unsafe`` function,
  ``connection.close()``...).  In raise mode the error raised is
  ``SynchronousOnlyBlockingCallError``: our ``BlockingCallError`` *and* Django's
  ``SynchronousOnlyOperation``; in warn mode Django's error goes on unchanged.
- ``"django.core.cache.cache.<method>"``: ``get``, ``set``, ``add``, ``delete``, ``touch``,
  ``has_key``, ``get_many``, ``set_many``, ``delete_many``, ``get_or_set``, ``incr``, ``decr``,
  ``incr_version``, ``decr_version``, ``clear`` on a file, database, Redis or memcached cache
  (any alias).  The local-memory and dummy caches never block and are never reported.
- ``"django.core.files.storage.default_storage.<method>"``: ``open``, ``save``, ``exists``,
  ``delete``, ``listdir``, ``size``, ``get_accessed_time``, ``get_created_time``,
  ``get_modified_time`` of any storage but ``InMemoryStorage`` (file fields' ``open``/``size``
  too).
- Templates: ``"django.shortcuts.render"``, ``"django.template.loader.render_to_string"``,
  ``"django.template.loader.get_template"``, ``"django.template.loader.select_template"`` when
  the template is read from disk (not served by the cached loader or from memory); an
  ``{% include %}``/``{% extends %}`` read while rendering reports as ``get_template``.
  Rendering a template already loaded is not judged, but what it runs is (a lazy queryset in
  its context is a ``django.db.query``).
- Sessions: ``"django.contrib.sessions.backends.<db|cached_db|file|cache>.SessionStore.<load|
  save|create|exists|delete>"`` (``request.session[...]`` loads the session) and
  ``"django.contrib.sessions.backends.base.SessionBase.<cycle_key|flush>"``; signed-cookie
  sessions and cache sessions on a local-memory cache are never reported.
- Auth: ``"django.contrib.auth.get_user"`` (the lazy ``request.user``, when it has to read the
  session or the user), ``"django.contrib.auth.authenticate"``, ``".login"``, ``".logout"``,
  ``"django.contrib.auth.hashers.check_password"``, ``".make_password"``,
  ``".verify_password"`` (the hashing inside Django 5.x's ``acheck_password`` and
  ``aauthenticate``, which run it on the loop; 6.0 moved it to a thread), and
  ``"django.contrib.auth.base_user.AbstractBaseUser.check_password"``/``".set_password"``.
- Mail: ``"django.core.mail.send_mail"``, ``".send_mass_mail"``, ``".mail_admins"``,
  ``".mail_managers"``, ``"django.core.mail.EmailMessage.send"``: reported when the message goes
  out through the SMTP backend (the locmem/console/dummy backends do not block), and
  ``"django.core.mail.backends.smtp.EmailBackend.send_messages"``/``".open"`` when called
  directly.

Django's own async APIs (``aget``, ``acount``, ``cache.aget``, ``request.auser()``...) run the
sync code in a thread through ``sync_to_async`` and are never reported, except where Django
runs sync work on the loop itself (the file session backend's async methods, password hashing
in 5.x's ``acheck_password``): those are reported like the sync calls.

Judged not blocking: a file cache making sure of its directory when it is created (Django
creates caches once per request context, ``await cache.aget(...)`` included; key
``"django.core.cache.backends.filebased.FileBasedCache"``, never reported).  Password checks
are always judged: Django runs the hasher even for an unusable password (so that timing does
not tell which users exist).  Left to the driver families: row fetches on a raw cursor
(``cursor.fetchone()`` is ``sqlite3.Cursor.fetchone`` for SQLite; a psycopg client-side fetch
does no I/O), and mail sent through the file and console backends (their file and stdout
writes are the files and console families' to judge).
"""

from __future__ import annotations

import dataclasses

from .._spec import Family, Format, Hook, MakeError, OffloadAdapter, WouldBlock, WrapperFactory
from . import _django_checks as checks
from ._django_errors import refusal, refused_by_django
from ._django_wrap import (
    django_call,
    django_query,
    django_setup,
    mail_entry,
    offload_query,
    smtp_call,
    synchronous_only_init,
)
from ._sql import fmt_sql

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)
__asyncguard_work__ = True  # the guard judging or reporting a call (_frames)

CATEGORY = "django"

# -- hints (one clause: the fix) ------------------------------------------------------------------

THREAD = "or run it in a thread: `await sync_to_async(fn)()`"
ORM = (
    "use the async ORM (`await Model.objects.aget(...)`, `acount()`, `aexists()`, "
    "`async for obj in queryset`, `await obj.asave()`/`adelete()`); raw cursors and "
    "transactions have no async API: put them in a sync function and "
    "`await sync_to_async(fn)()`"
)
SYNCHRONOUS_ONLY = (
    "Django refuses this on an event loop (SynchronousOnlyOperation): use its async API "
    "(`aget`, `acount`, `async for`, `await request.auser()`, `await cache.aget(...)`) " + THREAD
)
STORAGE = (
    "Django's storage API is sync-only: `await sync_to_async(default_storage.{method})(...)` "
    "runs it in a thread"
)
TEMPLATE = (
    "return a `TemplateResponse` (Django renders it in a thread), or "
    "`await sync_to_async(render_to_string)(...)`"
)
RENDER = (
    "return `TemplateResponse(request, template_name, context)` instead (Django renders it in "
    "a thread), or `await sync_to_async(render)(...)`"
)
SESSION = (
    "use the async session API: `await request.session.aget(key)`, `aset(...)`, `asave()` "
    "(Django 5.1+; before, `await sync_to_async(fn)()`)"
)
SESSION_FILE = (
    "the file session backend reads and writes files even in its async methods: use the db "
    "or cache backend with `await request.session.aget(key)` (Django 5.1+), " + THREAD
)
MAIL = "send mail from a task queue, or `await sync_to_async(send_mail)(...)`"
USER = (
    "use `user = await request.auser()` (Django 5.0+) instead of `request.user`; on older "
    "versions `await sync_to_async(get_user)(request)`"
)
CHECK_PASSWORD = (
    "password hashing is CPU work (PBKDF2): `await user.acheck_password(raw)` runs it in a "
    "thread on Django 6.0+ (5.x hashes on the loop); otherwise "
    "`await sync_to_async(user.check_password)(raw)`"
)
VERIFY_PASSWORD = (
    "Django 5.x's `acheck_password` and `aauthenticate` hash the password on the event loop "
    "(6.0+ runs it in a thread): `await sync_to_async(user.check_password)(raw)` / "
    "`sync_to_async(authenticate)` run it in a thread"
)
MAKE_PASSWORD = (
    "password hashing is CPU work (PBKDF2) with no async API: "
    "`await sync_to_async(make_password)(raw)` (or `sync_to_async(user.set_password)`) runs it "
    "in a thread"
)
AUTHENTICATE = (
    "use `await aauthenticate(request, ...)` (Django 5.0+; it hashes in a thread from 6.0), "
    + THREAD
)
LOGIN = "use `await alogin(request, user)` (Django 5.0+), " + THREAD
LOGOUT = "use `await alogout(request)` (Django 5.0+), " + THREAD


def _cache_hint(method: str) -> str:
    return f"use Django's async cache API: `await cache.a{method}(...)`, " + THREAD


# -- hook tables -----------------------------------------------------------------------------------


def _hook(
    module: str,
    attr: str,
    key: str,
    hint: str,
    would_block: WouldBlock | None = checks.always,
    fmt: Format | None = None,
    *,
    method: bool = False,
    factory: WrapperFactory = django_call,
    optional: bool = False,
    sensitive: bool = False,
    error: MakeError | None = None,
    offload_adapter: OffloadAdapter | None = None,
) -> Hook:
    return Hook(
        module,
        attr,
        key,
        CATEGORY,
        hint,
        would_block=would_block,
        fmt=fmt,
        method=method,
        factory=factory,
        optional=optional,
        sensitive=sensitive,
        error=error,
        # what Django refuses in raise mode it also refuses in warn mode: said so, not timed
        refused_by=refused_by_django if error is refusal else None,
        offload_adapter=offload_adapter,
    )


def _database_hooks() -> list[Hook]:
    compiler = "django.db.models.sql.compiler"
    key = "django.db.query"
    hooks = [
        _hook(compiler, f"{cls}.execute_sql", key, ORM, checks.query_runs, checks.fmt_query,
              method=True, factory=django_query, error=refusal)
        for cls in ("SQLCompiler", "SQLInsertCompiler", "SQLUpdateCompiler")
    ]  # fmt: skip
    hooks += [
        _hook("django.db.backends.utils", f"CursorWrapper.{name}", key, ORM, checks.always,
              fmt_sql, method=True)
        for name in ("execute", "executemany", "callproc")
    ]  # fmt: skip
    hooks += [
        _hook("django.db.backends.base.base", "BaseDatabaseWrapper.cursor", key, ORM,
              checks.not_connected, checks.fmt_connect, method=True, error=refusal),
        _hook("django.db.transaction", "Atomic.__enter__", key, ORM, checks.always,
              checks.fmt_begin, method=True, error=refusal),
        _hook("django.db.transaction", "Atomic.__exit__", key, ORM, checks.always,
              checks.fmt_end, method=True, error=refusal),
        _hook("django.core.exceptions", "SynchronousOnlyOperation.__init__",
              "django.utils.asyncio.async_unsafe", SYNCHRONOUS_ONLY, None, None,
              factory=synchronous_only_init),
    ]  # fmt: skip
    # offload mode: an ORM query runs in the worker thread on that thread's own connection
    return [
        dataclasses.replace(hook, offload_adapter=offload_query) if hook.key == key else hook
        for hook in hooks
    ]


CACHE_METHODS = (
    "get",
    "set",
    "add",
    "delete",
    "touch",
    "has_key",
    "get_many",
    "set_many",
    "delete_many",
    "get_or_set",
    "incr",
    "decr",
    "incr_version",
    "decr_version",
    "clear",
)

# The cache classes that define each method (the base class's versions call the others).
_CACHE_CLASSES = (
    ("django.core.cache.backends.base", "BaseCache"),
    ("django.core.cache.backends.filebased", "FileBasedCache"),
    ("django.core.cache.backends.db", "DatabaseCache"),
    ("django.core.cache.backends.redis", "RedisCache"),
    ("django.core.cache.backends.memcached", "BaseMemcachedCache"),
)
_CACHE_DEFINES: dict[str, tuple[str, ...]] = {
    "BaseCache": CACHE_METHODS,
    "FileBasedCache": ("get", "set", "add", "delete", "touch", "has_key", "clear"),
    "DatabaseCache": (
        "get",
        "set",
        "add",
        "delete",
        "touch",
        "has_key",
        "get_many",
        "delete_many",
        "clear",
    ),
    "RedisCache": (
        "get",
        "set",
        "add",
        "delete",
        "touch",
        "has_key",
        "get_many",
        "set_many",
        "delete_many",
        "incr",
        "clear",
    ),
    "BaseMemcachedCache": (
        "get",
        "set",
        "add",
        "delete",
        "touch",
        "get_many",
        "set_many",
        "delete_many",
        "incr",
        "clear",
    ),
}


def _cache_hooks() -> list[Hook]:
    # A file cache checks (and makes) its directory when created, i.e. on first use in each
    # request context, even for `await cache.aget(...)`: a tiny, unavoidable stat/mkdir that
    # is judged not blocking (and covers its callees) so correct async code stays clean.
    hooks = [
        _hook(
            "django.core.cache.backends.filebased",
            "FileBasedCache.__init__",
            "django.core.cache.backends.filebased.FileBasedCache",
            _cache_hint("get"),
            checks.never,
            method=True,
            factory=django_setup,
        )
    ]
    for module, cls in _CACHE_CLASSES:
        for name in _CACHE_DEFINES[cls]:
            hooks.append(
                _hook(
                    module,
                    f"{cls}.{name}",
                    f"django.core.cache.cache.{name}",
                    _cache_hint(name),
                    checks.cache_blocks,
                    checks.no_args if name == "clear" else checks.fmt_key,
                    method=True,
                    # a method a version does not define is inherited, and hooked there
                    optional=cls != "BaseCache",
                    error=refusal if cls == "DatabaseCache" else None,  # it queries
                )
            )
    return hooks


STORAGE_METHODS = (
    "open",
    "save",
    "exists",
    "delete",
    "listdir",
    "size",
    "get_accessed_time",
    "get_created_time",
    "get_modified_time",
)


def _storage_hooks() -> list[Hook]:
    hooks = []
    for name in STORAGE_METHODS:
        # ``open``/``save`` are the base class's template methods; FileSystemStorage defines
        # the rest (other storages override them all)
        base = name in ("open", "save")
        hooks.append(
            _hook(
                "django.core.files.storage.base"
                if base
                else "django.core.files.storage.filesystem",
                f"Storage.{name}" if base else f"FileSystemStorage.{name}",
                f"django.core.files.storage.default_storage.{name}",
                STORAGE.replace("{method}", name),
                checks.storage_blocks if base else checks.always,
                checks.fmt_key,
                method=True,
            )
        )
    return hooks


def _template_hooks() -> list[Hook]:
    loader = "django.template.loader"
    get_template = f"{loader}.get_template"
    return [
        _hook(loader, "get_template", get_template, TEMPLATE, checks.get_template_reads,
              checks.fmt_template),
        _hook(loader, "select_template", f"{loader}.select_template", TEMPLATE,
              checks.select_template_reads, checks.fmt_select),
        _hook(loader, "render_to_string", f"{loader}.render_to_string", TEMPLATE,
              checks.render_to_string_reads, checks.fmt_template),
        _hook("django.shortcuts", "render", "django.shortcuts.render", RENDER,
              checks.render_reads, checks.fmt_render),
        _hook("django.template.engine", "Engine.find_template", get_template, TEMPLATE,
              checks.find_template_reads, checks.fmt_find_template, method=True),
    ]  # fmt: skip


SESSION_BACKENDS: dict[str, tuple[str, ...]] = {
    "db": ("load", "save", "create", "exists", "delete"),
    "cached_db": ("load", "save", "exists", "delete"),
    "file": ("load", "save", "create", "exists", "delete"),
    "cache": ("load", "save", "create", "exists", "delete"),
}


def _session_hooks() -> list[Hook]:
    hooks = []
    for backend, methods in SESSION_BACKENDS.items():
        module = f"django.contrib.sessions.backends.{backend}"
        for name in methods:
            hooks.append(
                _hook(
                    module,
                    f"SessionStore.{name}",
                    f"{module}.SessionStore.{name}",
                    SESSION_FILE if backend == "file" else SESSION,
                    checks.session_blocks if backend == "cache" else checks.always,
                    checks.no_args,  # never the session key: it is the secret
                    method=True,
                    error=refusal if backend in ("db", "cached_db") else None,  # they query
                )
            )
    base = "django.contrib.sessions.backends.base"
    for name in ("cycle_key", "flush"):
        hooks.append(
            _hook(base, f"SessionBase.{name}", f"{base}.SessionBase.{name}", SESSION,
                  checks.session_blocks, checks.no_args, method=True)
        )  # fmt: skip
    return hooks


def _auth_hooks() -> list[Hook]:
    auth = "django.contrib.auth"
    hashers = f"{auth}.hashers"
    user = f"{auth}.base_user"
    return [
        # the user, the session and last_login are read and written through the ORM
        _hook(f"{auth}.middleware", "get_user", f"{auth}.get_user", USER, checks.user_blocks,
              checks.fmt_request, error=refusal),
        _hook(auth, "get_user", f"{auth}.get_user", USER, checks.get_user_blocks,
              checks.fmt_request, error=refusal),
        _hook(auth, "authenticate", f"{auth}.authenticate", AUTHENTICATE, checks.always,
              checks.elided, sensitive=True, error=refusal),
        _hook(auth, "login", f"{auth}.login", LOGIN, checks.always, checks.fmt_login,
              error=refusal),
        _hook(auth, "logout", f"{auth}.logout", LOGOUT, checks.always, checks.fmt_request),
        _hook(hashers, "check_password", f"{hashers}.check_password", CHECK_PASSWORD,
              checks.always, checks.elided, sensitive=True),
        _hook(hashers, "verify_password", f"{hashers}.verify_password", VERIFY_PASSWORD,
              checks.always, checks.elided, optional=True, sensitive=True),  # Django 5.0+
        _hook(hashers, "make_password", f"{hashers}.make_password", MAKE_PASSWORD,
              checks.makes_hash, checks.elided, sensitive=True),
        _hook(user, "AbstractBaseUser.check_password",
              f"{user}.AbstractBaseUser.check_password", CHECK_PASSWORD, checks.always,
              checks.elided, method=True, sensitive=True),
        _hook(user, "AbstractBaseUser.set_password", f"{user}.AbstractBaseUser.set_password",
              MAKE_PASSWORD, checks.user_makes_hash, checks.elided, method=True, sensitive=True),
    ]  # fmt: skip


def _mail_hooks() -> list[Hook]:
    mail = "django.core.mail"
    smtp = f"{mail}.backends.smtp"
    return [
        _hook(mail, "send_mail", f"{mail}.send_mail", MAIL, None, checks.fmt_subject,
              factory=mail_entry),
        _hook(mail, "send_mass_mail", f"{mail}.send_mass_mail", MAIL, None,
              checks.fmt_mass_mail, factory=mail_entry),
        _hook(mail, "mail_admins", f"{mail}.mail_admins", MAIL, None, checks.fmt_subject,
              factory=mail_entry),
        _hook(mail, "mail_managers", f"{mail}.mail_managers", MAIL, None, checks.fmt_subject,
              factory=mail_entry),
        _hook(f"{mail}.message", "EmailMessage.send", f"{mail}.EmailMessage.send", MAIL, None,
              checks.no_args, method=True, factory=mail_entry),
        _hook(smtp, "EmailBackend.send_messages", f"{smtp}.EmailBackend.send_messages", MAIL,
              checks.has_messages, checks.fmt_messages, method=True, factory=smtp_call),
        _hook(smtp, "EmailBackend.open", f"{smtp}.EmailBackend.open", MAIL,
              checks.not_connected, checks.no_args, method=True, factory=smtp_call),
    ]  # fmt: skip


FAMILY = Family(
    name="django",
    # Django's own rule for its sync code (and the ORM's): the thread-sensitive executor; a
    # refusal Django raised has nothing to run
    routes=(("django.utils.asyncio.async_unsafe", "inline"), ("django.*", "thread_sensitive")),
    description="Django ORM, cache, storage, templates, sessions, mail and auth",
    hooks=(
        *_database_hooks(),
        *_cache_hooks(),
        *_storage_hooks(),
        *_template_hooks(),
        *_session_hooks(),
        *_auth_hooks(),
        *_mail_hooks(),
    ),
)
