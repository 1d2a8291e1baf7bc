from django.urls import path

from shop import views

urlpatterns = [
    path("", views.index),
    path("health", views.health),
    path("bad/sleep", views.bad_sleep),
    path("good/sleep", views.good_sleep),
    path("bad/http", views.bad_http),
    path("good/http", views.good_http),
    path("bad/orm", views.bad_orm),
    path("good/orm", views.good_orm),
    path("bad/cache", views.bad_cache),
    path("good/cache", views.good_cache),
    path("bad/template", views.bad_template),
    path("good/template", views.good_template),
    path("bad/cpu", views.bad_cpu),
    path("good/cpu", views.good_cpu),
    path("slow/sleep", views.slow_sleep),
    path("slow/query", views.slow_query),
]
