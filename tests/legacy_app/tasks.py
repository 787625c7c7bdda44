"""Tasks as a django-background-tasks project declares them (only the imports changed)."""

from __future__ import annotations

from django.contrib.auth.models import User

from background_tasks import background  # was: from background_task import background
from background_tasks.exceptions import InvalidTaskError  # was: background_task.exceptions
from tests.testapp.models import TaskRun


@background(schedule=60)
def notify_user(user_id):  # type: ignore[no-untyped-def]
    # lookup user by id and send them a message
    user = User.objects.get(pk=user_id)
    TaskRun.objects.create(key=f"notified:{user.username}")


@background(queue="my-queue")
def queued_job(key):  # type: ignore[no-untyped-def]
    TaskRun.objects.create(key=f"queued:{key}")


@background(remove_existing_tasks=True)
def refresh(key):  # type: ignore[no-untyped-def]
    TaskRun.objects.create(key=f"refreshed:{key}")


@background
def rejects(key):  # type: ignore[no-untyped-def]
    TaskRun.objects.create(key=f"rejected:{key}")
    raise InvalidTaskError("this task will not be rescheduled")


class Reports:
    # A task declared in a class body: django-background-tasks named it "<module>.<name>".
    @background
    def nightly(key):  # type: ignore[no-untyped-def]
        TaskRun.objects.create(key=f"nightly:{key}")
