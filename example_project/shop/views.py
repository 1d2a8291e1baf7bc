"""Async views that block the event loop (``bad_*``) next to their correct versions (``good_*``).

Every ``bad_*`` view makes a synchronous call on the event loop: while it runs, the server
answers no other request.  asyncguard reports each one with this file's line, the request and
the view; in raise mode the call raises ``BlockingCallError`` before it starts (a 500 with
Django's debug page), in warn mode it runs, is timed and logged, and the response is unchanged.
The lines that block end with ``# blocks``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time

import httpx
import requests
from django.core.cache import cache
from django.db.models.expressions import RawSQL
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.template.response import TemplateResponse

from . import upstream
from .models import Product

DELAY = 0.05  # seconds


async def index(request: HttpRequest) -> HttpResponse:
    lines = ["asyncguard example shop: each blocking view next to its async version", ""]
    for topic in ("sleep", "http", "orm", "cache", "template", "cpu"):
        lines.append(f"  /bad/{topic:<10} /good/{topic}")
    lines += ["", "  /health"]
    return HttpResponse("\n".join(lines) + "\n", content_type="text/plain")


async def health(request: HttpRequest) -> JsonResponse:
    # the process id tells a client which server answered (the tests check it is theirs)
    return JsonResponse({"status": "ok", "pid": os.getpid()})


# -- sleeping ------------------------------------------------------------------------------


async def bad_sleep(request: HttpRequest) -> JsonResponse:
    time.sleep(DELAY)  # blocks
    return JsonResponse({"slept": DELAY})


async def good_sleep(request: HttpRequest) -> JsonResponse:
    await asyncio.sleep(DELAY)
    return JsonResponse({"slept": DELAY})


# -- an HTTP API ---------------------------------------------------------------------------


async def bad_http(request: HttpRequest) -> JsonResponse:
    response = requests.get(upstream.url("/prices"), timeout=5)  # blocks
    return JsonResponse(response.json())


async def good_http(request: HttpRequest) -> JsonResponse:
    # one client for the process, made at import: a new one reads the CA bundle from disk
    response = await HTTP.get(upstream.url("/prices"), timeout=5)
    return JsonResponse(response.json())


# -- the ORM (DJANGO_ALLOW_ASYNC_UNSAFE is set in settings, so Django does not stop it) ------


async def bad_orm(request: HttpRequest) -> JsonResponse:
    count = Product.objects.count()  # blocks
    return JsonResponse({"products": count})


async def good_orm(request: HttpRequest) -> JsonResponse:
    count = await Product.objects.acount()
    return JsonResponse({"products": count})


# -- the cache (FileBasedCache: every get and set is file I/O) -----------------------------


async def bad_cache(request: HttpRequest) -> JsonResponse:
    visits = cache.get("visits", 0) + 1  # blocks
    cache.set("visits", visits)  # blocks
    return JsonResponse({"visits": visits})


async def good_cache(request: HttpRequest) -> JsonResponse:
    visits = await cache.aget("visits", 0) + 1
    await cache.aset("visits", visits)
    return JsonResponse({"visits": visits})


# -- templates (read from disk by the template loader) ---------------------------------------


async def bad_template(request: HttpRequest) -> HttpResponse:
    products = [product async for product in Product.objects.all()]
    context = {"title": "Products", "products": products}
    return render(request, "shop/products.html", context)  # blocks


async def good_template(request: HttpRequest) -> TemplateResponse:
    products = [product async for product in Product.objects.all()]
    context = {"title": "Products", "products": products}
    # Rendered after the view returns, by Django's handler, in a thread (sync_to_async):
    # `await sync_to_async(render)(request, ...)` works too.
    return TemplateResponse(request, "shop/products.html", context)


# -- CPU-bound work: no hook knows it; the stall watchdog samples the stalled loop -----------

ROUNDS = 1_000_000  # PBKDF2 rounds: about 0.2 s of CPU


async def bad_cpu(request: HttpRequest) -> JsonResponse:
    digest = hashlib.pbkdf2_hmac("sha256", b"password", b"salt", ROUNDS)  # blocks
    return JsonResponse({"digest": digest.hex()[:16]})


async def good_cpu(request: HttpRequest) -> JsonResponse:
    # hashlib releases the GIL while it hashes: a thread is enough (pure-Python work would
    # want a process pool)
    digest = await asyncio.to_thread(hashlib.pbkdf2_hmac, "sha256", b"password", b"salt", ROUNDS)
    return JsonResponse({"digest": digest.hex()[:16]})


# -- slow blocking calls, for offload mode (ASYNC_GUARD_MODE=offload) ------------------------
# In offload mode each of these runs in a worker thread while the loop serves other requests:
# 20 requests at once take about as long as one.

SLOW = 0.2  # seconds


async def slow_sleep(request: HttpRequest) -> JsonResponse:
    time.sleep(SLOW)  # blocks
    return JsonResponse({"slept": SLOW})


async def slow_query(request: HttpRequest) -> JsonResponse:
    # a query that waits SLOW seconds in the database (shop.apps adds sleep() to SQLite)
    waited = (
        Product.objects.annotate(waited=RawSQL("sleep(%s)", [SLOW]))  # blocks
        .values_list("waited", flat=True)
        .first()
    )
    return JsonResponse({"waited": waited})


# The client of good_http, made when Django imports this module (at start-up or on the first
# request, inside the import: not a call on the event loop), as real code should: creating an
# httpx client builds its SSL context, reading the system's CA bundle (tens of ms of file I/O).
# No kept-alive connections, so it serves any event loop (the tests run several).
HTTP = httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0))
