from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class BackgroundTasksConfig(AppConfig):
    name = "background_tasks"
    verbose_name = _("Background tasks")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.utils.module_loading import autodiscover_modules

        from . import checks, logs  # noqa: F401 - registers system checks and log receivers
        from .conf import app_settings
        from .django_tasks import connect, tasks_framework_available
        from .enqueue import new_task
        from .models import plug_new_task_builder

        plug_new_task_builder(new_task)  # Task.objects.new_task(), django-background-tasks' API
        if tasks_framework_available():  # django.tasks (Django 6.0+) or the django-tasks backport
            connect()  # resolving Django Tasks' names, Django's task signals sent from ours

        if app_settings.AUTODISCOVER:
            # An error inside a tasks module propagates: a half-registered app must not start.
            autodiscover_modules("tasks")
