"""The pytest fixture that configures Django for in-process tests (a plugin module: list it in
``pytest_plugins``, or import the fixture into a test module)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def django_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import djangotest

    djangotest.configure(tmp_path_factory.mktemp("djangotest"))
    from django.contrib.auth import get_user_model
    from django.db import connections

    from djangotest.models import Category, Item
    from djangotest.views import PASSWORD

    fruit, _ = Category.objects.get_or_create(name="fruit")
    for name in ("apple", "banana", "cherry"):
        Item.objects.get_or_create(name=name, defaults={"category": fruit, "quantity": 1})
    users = get_user_model().objects
    if not users.filter(username="alice").exists():
        users.create_user("alice", "alice@example.com", PASSWORD)
    connections.close_all()
    return Path(os.environ["DJANGOTEST_DIR"])
