"""Views of the in-process test project.

Each async view makes one blocking call, on the line marked ``# <- blocks`` (the tests assert
the violation points there); ``sync_*`` views make the same calls in a sync view, which Django
runs in a thread (never flagged); ``good_*`` views use Django's async APIs instead.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth import authenticate, get_user_model, login
from django.contrib.auth.hashers import check_password, make_password
from django.core.cache import caches
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.mail import EmailMessage, send_mail
from django.db import connection, transaction
from django.db.models import F
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.template.loader import get_template, render_to_string, select_template
from django.template.response import TemplateResponse
from django.utils.asyncio import async_unsafe

import asyncguard

from .models import Category, Item

PASSWORD = "correct horse battery staple"


def done(value: Any = None) -> HttpResponse:
    return JsonResponse({"result": repr(value)})


# -- ORM ---------------------------------------------------------------------------------------


async def orm_get(request: HttpRequest) -> HttpResponse:
    item = Item.objects.get(name="apple")  # <- blocks
    return done(item.name)


async def orm_list(request: HttpRequest) -> HttpResponse:
    items = list(Item.objects.order_by("name"))  # <- blocks
    return done([item.name for item in items])


async def orm_count(request: HttpRequest) -> HttpResponse:
    count = Item.objects.count()  # <- blocks
    return done(count)


async def orm_exists(request: HttpRequest) -> HttpResponse:
    found = Item.objects.filter(name="apple").exists()  # <- blocks
    return done(found)


async def orm_iterator(request: HttpRequest) -> HttpResponse:
    items = list(Item.objects.iterator(chunk_size=1))  # <- blocks
    return done([item.name for item in items])


async def orm_update(request: HttpRequest) -> HttpResponse:
    updated = Item.objects.filter(name="apple").update(quantity=F("quantity") + 1)  # <- blocks
    return done(updated)


async def orm_create(request: HttpRequest) -> HttpResponse:
    category = await Category.objects.aget(name="fruit")
    item = Item(name="kiwi", category=category)
    item.save()  # <- blocks
    await item.adelete()
    return done(item.name)


async def orm_related(request: HttpRequest) -> HttpResponse:
    item = await Item.objects.aget(name="apple")
    category = item.category.name  # <- blocks
    return done(category)


async def orm_none(request: HttpRequest) -> HttpResponse:
    return done(list(Item.objects.none()))


async def raw_cursor(request: HttpRequest) -> HttpResponse:
    with asyncguard.allow_blocking():  # connecting: not what this view is about
        cursor = connection.cursor()
    try:
        cursor.execute("UPDATE djangotest_item SET quantity = 1 WHERE name = 'apple'")  # <- blocks
    finally:
        cursor.close()
    return done()


async def connect(request: HttpRequest) -> HttpResponse:
    cursor = connection.cursor()  # <- blocks
    cursor.close()
    return done()


async def atomic(request: HttpRequest) -> HttpResponse:
    with transaction.atomic():  # <- blocks
        pass
    return done()


@async_unsafe
def legacy_sync_api() -> str:
    """A library's sync-only function, marked the way Django marks its own."""
    return "legacy"


async def synchronous_only(request: HttpRequest) -> HttpResponse:
    value = legacy_sync_api()  # <- blocks
    return done(value)


async def connection_close(request: HttpRequest) -> HttpResponse:
    connection.close()  # <- blocks
    return done()


def sync_orm(request: HttpRequest) -> HttpResponse:
    item = Item.objects.get(name="apple")
    names = [i.name for i in Item.objects.all()]
    with transaction.atomic():
        Item.objects.filter(name="apple").update(quantity=F("quantity"))
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return done((item.name, names, legacy_sync_api()))


async def good_orm(request: HttpRequest) -> HttpResponse:
    item = await Item.objects.aget(name="apple")
    count = await Item.objects.acount()
    names = [i.name async for i in Item.objects.order_by("name")]
    category = await Category.objects.aget(pk=item.category_id)
    await Item.objects.filter(name="apple").aupdate(quantity=F("quantity"))
    return done((item.name, count, names, category.name))


# -- cache ---------------------------------------------------------------------------------------

CACHE_ARGS: dict[str, tuple[Any, ...]] = {
    "get": ("color",),
    "set": ("color", "blue"),
    "add": ("shape", "round"),
    "delete": ("shape",),
    "touch": ("color",),
    "has_key": ("color",),
    "get_many": (["color", "shape"],),
    "set_many": ({"color": "red", "shape": "square"},),
    "delete_many": (["shape"],),
    "get_or_set": ("color", "green"),
    "incr": ("counter",),
    "decr": ("counter",),
    "incr_version": ("color",),
    "clear": (),
}


async def cache_call(request: HttpRequest, alias: str, method: str) -> HttpResponse:
    cache = caches[alias]
    result = getattr(cache, method)(*CACHE_ARGS[method])  # <- blocks
    return done(result)


async def cache_contains(request: HttpRequest, alias: str) -> HttpResponse:
    found = "color" in caches[alias]  # <- blocks
    return done(found)


def sync_cache_call(request: HttpRequest, alias: str, method: str) -> HttpResponse:
    return done(getattr(caches[alias], method)(*CACHE_ARGS[method]))


async def good_cache(request: HttpRequest, alias: str) -> HttpResponse:
    cache = caches[alias]
    await cache.aset("color", "blue")
    value = await cache.aget("color")
    many = await cache.aget_many(["color"])
    await cache.adelete("color")
    return done((value, many))


# -- storage -------------------------------------------------------------------------------------

STORAGE_ARGS: dict[str, tuple[Any, ...]] = {
    "save": ("uploads/new.txt", ContentFile(b"new")),
    "exists": ("seed.txt",),
    "delete": ("doomed.txt",),
    "listdir": ("",),
    "size": ("seed.txt",),
    "get_modified_time": ("seed.txt",),
    "get_accessed_time": ("seed.txt",),
    "get_created_time": ("seed.txt",),
}


async def storage_call(request: HttpRequest, method: str) -> HttpResponse:
    result = getattr(default_storage, method)(*STORAGE_ARGS[method])  # <- blocks
    return done(result)


async def storage_open(request: HttpRequest) -> HttpResponse:
    default_storage.open("seed.txt").close()  # <- blocks
    return done()


def sync_storage(request: HttpRequest) -> HttpResponse:
    with default_storage.open("seed.txt") as file:
        data = file.read()
    return done((data, default_storage.exists("seed.txt"), default_storage.size("seed.txt")))


async def good_storage(request: HttpRequest) -> HttpResponse:
    exists = await sync_to_async(default_storage.exists)("seed.txt")
    return done(exists)


# -- templates -----------------------------------------------------------------------------------


async def template_render(request: HttpRequest) -> HttpResponse:
    return render(request, "djangotest/page.html", {"name": "render"})  # <- blocks


async def template_render_to_string(request: HttpRequest) -> HttpResponse:
    html = render_to_string("djangotest/page.html", {"name": "string"})  # <- blocks
    return HttpResponse(html)


async def template_get(request: HttpRequest) -> HttpResponse:
    template = get_template("djangotest/page.html")  # <- blocks
    return HttpResponse(template.render({"name": "get"}))


async def template_select(request: HttpRequest) -> HttpResponse:
    template = select_template(["djangotest/missing.html", "djangotest/page.html"])  # <- blocks
    return HttpResponse(template.render({"name": "select"}))


async def template_include(request: HttpRequest) -> HttpResponse:
    html = render_to_string("djangotest/outer.html", {"name": "include"})  # <- blocks
    return HttpResponse(html)


async def template_queryset(request: HttpRequest) -> HttpResponse:
    html = render_to_string("djangotest/items.html", {"items": Item.objects.all()})  # <- blocks
    return HttpResponse(html)


def sync_template(request: HttpRequest) -> HttpResponse:
    return render(request, "djangotest/outer.html", {"name": "sync"})


async def good_template(request: HttpRequest) -> HttpResponse:
    return TemplateResponse(request, "djangotest/outer.html", {"name": "response"})


# -- sessions ------------------------------------------------------------------------------------


async def session_get(request: HttpRequest) -> HttpResponse:
    color = request.session.get("color")  # <- blocks
    return done(color)


async def session_set(request: HttpRequest) -> HttpResponse:
    request.session["color"] = "purple"  # <- blocks
    return done()


async def session_save(request: HttpRequest) -> HttpResponse:
    with asyncguard.allow_blocking():
        request.session["color"] = "orange"
    request.session.save()  # <- blocks
    return done()


async def session_cycle_key(request: HttpRequest) -> HttpResponse:
    request.session.cycle_key()  # <- blocks
    return done()


async def session_aget(request: HttpRequest) -> HttpResponse:
    color = await request.session.aget("color")  # <- blocks (file backend only)
    return done(color)


def sync_session(request: HttpRequest) -> HttpResponse:
    color = request.session.get("color")
    request.session["color"] = "teal"
    request.session.save()
    return done(color)


# -- mail ----------------------------------------------------------------------------------------


async def mail_send_mail(request: HttpRequest) -> HttpResponse:
    sent = send_mail("Hello", "Body", "shop@example.com", ["alice@example.com"])  # <- blocks
    return done(sent)


async def mail_message_send(request: HttpRequest) -> HttpResponse:
    message = EmailMessage("Receipt", "Thanks", "shop@example.com", ["bob@example.com"])
    sent = message.send()  # <- blocks
    return done(sent)


def sync_mail(request: HttpRequest) -> HttpResponse:
    sent = send_mail("Sync", "Body", "shop@example.com", ["carol@example.com"])
    return done(sent)


async def good_mail(request: HttpRequest) -> HttpResponse:
    sent = await sync_to_async(send_mail)("Async", "Body", "shop@example.com", ["dan@example.com"])
    return done(sent)


# -- auth ----------------------------------------------------------------------------------------


async def user_is_authenticated(request: HttpRequest) -> HttpResponse:
    authenticated = request.user.is_authenticated  # <- blocks
    return done(authenticated)


async def user_check_password(request: HttpRequest) -> HttpResponse:
    user = await get_user_model().objects.aget(username="alice")
    valid = user.check_password(PASSWORD)  # <- blocks
    return done(valid)


async def hashers_check_password(request: HttpRequest) -> HttpResponse:
    user = await get_user_model().objects.aget(username="alice")
    valid = check_password(PASSWORD, user.password)  # <- blocks
    return done(valid)


async def hashers_make_password(request: HttpRequest) -> HttpResponse:
    encoded = make_password(PASSWORD)  # <- blocks
    return done(encoded[:6])


async def user_acheck_password(request: HttpRequest) -> HttpResponse:
    user = await get_user_model().objects.aget(username="alice")
    valid = await user.acheck_password(PASSWORD)  # <- blocks
    return done(valid)


async def auth_authenticate(request: HttpRequest) -> HttpResponse:
    user = authenticate(request, username="alice", password=PASSWORD)  # <- blocks
    return done(user is not None)


async def auth_login(request: HttpRequest) -> HttpResponse:
    user = await get_user_model().objects.aget(username="alice")
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")  # <- blocks
    return done()


def sync_auth(request: HttpRequest) -> HttpResponse:
    user = get_user_model().objects.get(username="alice")
    return done((request.user.is_authenticated, user.check_password(PASSWORD)))


async def good_user(request: HttpRequest) -> HttpResponse:
    user = await request.auser()  # type: ignore[attr-defined]
    return done(user.is_authenticated)


async def good_password(request: HttpRequest) -> HttpResponse:
    user = await get_user_model().objects.aget(username="alice")
    valid = await sync_to_async(user.check_password)(PASSWORD)
    return done(valid)
