from __future__ import annotations

from django.apps import AppConfig


class DjangotestConfig(AppConfig):
    name = "djangotest"
    default_auto_field = "django.db.models.BigAutoField"
