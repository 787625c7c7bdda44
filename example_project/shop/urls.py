from __future__ import annotations

from django.urls import path

from . import import_views, views

app_name = "shop"

urlpatterns = [
    path("", views.orders, name="orders"),
    path("import/", import_views.import_page, name="import"),
    path("import/<int:task_id>/", import_views.import_page, name="import_task"),
    path(
        "import/<int:task_id>/progress.json",
        import_views.import_progress,
        name="import_progress",
    ),
]
