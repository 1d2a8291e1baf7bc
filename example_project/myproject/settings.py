"""Settings of the asyncguard example project.

Environment variables (all optional):

- ``DJANGO_DEBUG``: "1" (default) or "0".
- ``ASYNC_GUARD_MODE``: "raise" (the default under DEBUG), "warn" or "off".
- ``EXAMPLE_DATA_DIR``: where the SQLite database and the file cache live (default: this
  directory for the database, the system temp directory for the cache).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ["EXAMPLE_DATA_DIR"]) if os.environ.get("EXAMPLE_DATA_DIR") else None

SECRET_KEY = "example-project-only-not-a-secret"
DEBUG = os.environ.get("DJANGO_DEBUG", "1").lower() in ("1", "true", "yes", "on")
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

# Many projects set this to silence SynchronousOnlyOperation instead of fixing the query; the
# ORM then runs on the event loop, and only asyncguard notices (see /bad/orm).
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "shop",  # before asyncguard.django: its ready() starts the stand-in upstream API unguarded
    "asyncguard.django",
]

MIDDLEWARE = [  # Django's default stack (startproject)
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "myproject.urls"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": (DATA_DIR or BASE_DIR) / "db.sqlite3",
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": str(
            DATA_DIR / "cache" if DATA_DIR else Path(tempfile.gettempdir()) / "asyncguard-example"
        ),
    }
}

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "OPTIONS": {
            # Read templates from disk on every render (no cached loader), as in development.
            "loaders": ["django.template.loaders.app_directories.Loader"],
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    }
]

USE_TZ = True
TIME_ZONE = "UTC"

# asyncguard: raise under DEBUG, off otherwise (the default); ASYNC_GUARD_MODE overrides it.
ASYNC_GUARD = {
    "MODE": "raise" if DEBUG else "off",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(levelname)s %(name)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "asyncguard": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
    },
}
