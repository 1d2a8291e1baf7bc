"""Settings of the in-process test project.

Every path lives in ``DJANGOTEST_DIR`` (a temporary directory: ``djangotest.configure`` sets
it), so the module also works as ``DJANGO_SETTINGS_MODULE=djangotest.settings``.
"""

from __future__ import annotations

import os
from pathlib import Path

import django

HERE = Path(__file__).resolve().parent
BASE_DIR = Path(os.environ["DJANGOTEST_DIR"])

SECRET_KEY = "djangotest-insecure-key-for-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "djangotest",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "djangotest.urls"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(BASE_DIR / "db.sqlite3"),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# "redis" and "memcached" are added by the tests that start those servers
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "locmem": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": "djangotest",
    },
    "file": {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": str(BASE_DIR / "cache"),
    },
    "db": {
        "BACKEND": "django.core.cache.backends.db.DatabaseCache",
        "LOCATION": "djangotest_cache",
    },
}

MEDIA_ROOT = str(BASE_DIR / "media")
STORAGES = {
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": MEDIA_ROOT},
    },
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [str(HERE / "templates")],
        "APP_DIRS": False,
        "OPTIONS": {},
    }
]

SESSION_ENGINE = "django.contrib.sessions.backends.db"
SESSION_FILE_PATH = str(BASE_DIR / "sessions")
SESSION_CACHE_ALIAS = "file"

# Django 6.1 replaced EMAIL_BACKEND and EMAIL_* with MAILERS
if django.VERSION >= (6, 1):
    MAILERS = {"default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}}
else:
    EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"

USE_TZ = True
