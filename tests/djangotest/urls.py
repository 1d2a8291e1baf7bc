"""URLs of the in-process test project: the path is the view's name, with underscores."""

from __future__ import annotations

from django.urls import path

from . import views

_PLAIN = [
    "orm_get",
    "orm_list",
    "orm_count",
    "orm_exists",
    "orm_iterator",
    "orm_update",
    "orm_create",
    "orm_related",
    "orm_none",
    "raw_cursor",
    "connect",
    "atomic",
    "synchronous_only",
    "connection_close",
    "sync_orm",
    "good_orm",
    "storage_open",
    "sync_storage",
    "good_storage",
    "template_render",
    "template_render_to_string",
    "template_get",
    "template_select",
    "template_include",
    "template_queryset",
    "sync_template",
    "good_template",
    "session_get",
    "session_set",
    "session_save",
    "session_cycle_key",
    "session_aget",
    "sync_session",
    "mail_send_mail",
    "mail_message_send",
    "sync_mail",
    "good_mail",
    "user_is_authenticated",
    "user_check_password",
    "hashers_check_password",
    "hashers_make_password",
    "user_acheck_password",
    "auth_authenticate",
    "auth_login",
    "sync_auth",
    "good_user",
    "good_password",
]

urlpatterns = [path(f"{name}/", getattr(views, name), name=name) for name in _PLAIN] + [
    path("cache_call/<str:alias>/<str:method>/", views.cache_call, name="cache_call"),
    path("cache_contains/<str:alias>/", views.cache_contains, name="cache_contains"),
    path("sync_cache_call/<str:alias>/<str:method>/", views.sync_cache_call),
    path("good_cache/<str:alias>/", views.good_cache, name="good_cache"),
    path("storage_call/<str:method>/", views.storage_call, name="storage_call"),
]
