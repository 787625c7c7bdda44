"""A django-background-tasks project, only its imports changed, runs as it did there.

``tests/legacy_app/tasks.py`` declares its tasks as that package's README does; these tests call
them and drive the queue the way its README, docs and test suite do, with the real
``process_tasks`` worker in a subprocess. Each import that differs from the original says what
it was.
"""

from __future__ import annotations

import warnings
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import TestCase
from django.utils import timezone

from background_tasks import registry
from background_tasks.exceptions import TaskRedefinedWarning
from background_tasks.models import CompletedTask, Task  # was: from background_task.models ...
from background_tasks.tasks import tasks  # was: from background_task.tasks import tasks
from tests.helpers import run_command
from tests.legacy_app.tasks import Reports, notify_user, queued_job, refresh, rejects
from tests.testapp.models import TaskRun

NOTIFY = "tests.legacy_app.tasks.notify_user"


def process_tasks(*args: str) -> str:
    """``python manage.py process_tasks`` as a project runs it, for a couple of seconds."""
    result = run_command("process_tasks", "--duration", "2", "--sleep", "0.1", *args)
    assert result.returncode == 0, result.stderr
    return result.stderr


@pytest.fixture
def user(transactional_db: None) -> User:
    return User.objects.create_user("ada", "ada@example.com")


# -- the README, through the real worker ------------------------------------------------------


def test_readme__schedules_run_at_their_times_and_the_worker_runs_what_is_due(user: User) -> None:
    before = timezone.now()
    notify_user(user.id)  # the decorator's schedule=60
    notify_user(user.id, schedule=90)
    notify_user(user.id, schedule=timedelta(minutes=20))
    notify_user(user.id, schedule=timezone.now())  # run now

    delays = sorted(
        round((run_at - before).total_seconds())
        for run_at in Task.objects.filter(task_name=NOTIFY).values_list("run_at", flat=True)
    )
    assert delays == [0, 60, 90, 1200]

    process_tasks()

    assert TaskRun.objects.filter(key="notified:ada").count() == 1
    assert CompletedTask.objects.succeeded().filter(task_name=NOTIFY).count() == 1
    assert Task.objects.filter(task_name=NOTIFY).count() == 3


def test_readme__now_runs_inline(user: User) -> None:
    notify_user.now(user.id)

    assert TaskRun.objects.filter(key="notified:ada").count() == 1
    assert not Task.objects.exists()


def test_readme__verbose_name_and_creator_are_kept_and_found_by_created_by(user: User) -> None:
    notify_user(user.id, verbose_name="Notify user", creator=user, schedule=0)

    task = Task.objects.created_by(user).get()
    assert (str(task), task.creator) == ("Notify user", user)

    process_tasks()

    completed = CompletedTask.objects.created_by(user).get()
    assert (completed.verbose_name, completed.creator, completed.status) == (
        "Notify user",
        user,
        "succeeded",
    )


def test_readme__repeat_is_comparable_with_the_constants_and_repeats_after_a_run(
    user: User,
) -> None:
    until = timezone.now() + timedelta(days=1)
    notify_user(user.id, repeat=Task.HOURLY, repeat_until=until, schedule=0)

    # "Is the hourly job already scheduled?", the check such projects make before scheduling.
    assert Task.objects.filter(task_name=NOTIFY, repeat=Task.HOURLY).exists()
    assert not Task.objects.filter(repeat=Task.DAILY).exists()
    assert Task.objects.get().repeat == Task.HOURLY

    process_tasks()

    follower = Task.objects.get(task_name=NOTIFY)
    assert follower.repeat == Task.HOURLY
    assert follower.repeat_until == until
    assert TaskRun.objects.filter(key="notified:ada").count() == 1


def test_readme__queue_tasks_run_only_on_a_worker_of_that_queue(transactional_db: None) -> None:
    queued_job("a")

    process_tasks("--queue", "other")
    assert not TaskRun.objects.filter(key="queued:a").exists()

    process_tasks("--queue", "my-queue")
    assert TaskRun.objects.filter(key="queued:a").count() == 1


def test_readme__remove_existing_tasks_keeps_only_the_last_call(transactional_db: None) -> None:
    refresh("x")
    refresh("x")
    refresh("y")

    assert Task.objects.count() == 2

    process_tasks()
    assert sorted(TaskRun.objects.values_list("key", flat=True)) == ["refreshed:x", "refreshed:y"]


def test_invalid_task_error__fails_the_task_at_once_without_retries(
    transactional_db: None,
) -> None:
    rejects("bad")

    process_tasks()

    assert TaskRun.objects.filter(key="rejected:bad").count() == 1
    failed = CompletedTask.objects.failed().get()
    assert failed.attempts == 1
    assert "InvalidTaskError: this task will not be rescheduled" in failed.last_error
    assert not Task.objects.exists()


def test_class_level_task__is_named_module_dot_function_as_there(transactional_db: None) -> None:
    assert Reports.nightly.name == "tests.legacy_app.tasks.nightly"

    # A row written under that name by the old package runs.
    Task.objects.new_task("tests.legacy_app.tasks.nightly", args=["old"]).save()
    process_tasks()

    assert TaskRun.objects.filter(key="nightly:old").count() == 1


# -- the model and runner API its docs and test suite use -------------------------------------


class TestRunNextTask(TestCase):
    def setUp(self) -> None:
        # Its own test suite declares tasks with a fixed name in setUp(): each test defines
        # the same function again, which replaces the old one (with a warning here).
        def set_fields(**fields: object) -> None:
            TaskRun.objects.create(key=str(sorted(fields.items())))

        self.was_registered = "mytask" in registry
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.set_fields = tasks.background(name="mytask")(set_fields)
        self.redefined = [w for w in caught if issubclass(w.category, TaskRedefinedWarning)]

    @classmethod
    def tearDownClass(cls) -> None:
        registry.unregister("mytask")
        super().tearDownClass()

    def test_run_next_task__runs_one_ready_task_and_says_whether_it_did(self) -> None:
        self.assertFalse(tasks.run_next_task())
        self.set_fields(colour="red")
        self.set_fields(colour="blue", schedule=60)

        self.assertTrue(tasks.run_next_task())
        self.assertFalse(tasks.run_next_task())
        self.assertEqual(
            list(TaskRun.objects.values_list("key", flat=True)), ["[('colour', 'red')]"]
        )

    def test_run_next_task__of_a_queue(self) -> None:
        self.set_fields(colour="green", queue="q1")

        self.assertFalse(tasks.run_next_task(queue="q2"))
        self.assertTrue(tasks.run_next_task(queue="q1"))

    def test_setup_ran_again__the_new_definition_replaced_the_old_with_a_warning(self) -> None:
        self.assertIs(registry.get("mytask"), self.set_fields)
        self.assertEqual(len(self.redefined), 1 if self.was_registered else 0)


class TestTaskManager(TestCase):
    def test_new_task__returns_an_unsaved_checked_task_that_save_inserts(self) -> None:
        run_at = timezone.now() - timedelta(seconds=1)
        task = Task.objects.new_task(
            NOTIFY, args=[1], run_at=run_at, priority=3, queue="q", verbose_name="v"
        )
        self.assertIsNone(task.pk)
        task.save()

        saved = Task.objects.get()
        self.assertEqual(
            (saved.task_name, saved.params, saved.run_at, saved.priority, saved.queue),
            (NOTIFY, {"args": [1], "kwargs": {}}, run_at, 3, "q"),
        )
        self.assertEqual(list(Task.objects.get_task(NOTIFY, args=[1])), [saved])

    def test_new_task__refuses_arguments_json_cannot_hold_and_unknown_names(self) -> None:
        with self.assertRaises(TypeError):
            Task.objects.new_task(NOTIFY, args=[object()])
        with self.assertRaises(LookupError):
            Task.objects.new_task("tests.nowhere")

    def test_new_task__remove_existing_tasks_deletes_the_waiting_copies(self) -> None:
        Task.objects.new_task(NOTIFY, args=[1]).save()
        Task.objects.new_task(NOTIFY, args=[1], remove_existing_tasks=True).save()

        self.assertEqual(Task.objects.count(), 1)

    def test_find_available__ready_unlocked_tasks_highest_priority_first(self) -> None:
        low = notify_user(1, schedule=0, priority=1)
        high = notify_user(2, schedule=0, priority=9)
        notify_user(3)  # in 60 s
        held = notify_user(4, schedule=0)
        Task.objects.filter(pk=held.pk).update(locked_by="w", locked_at=timezone.now())

        self.assertEqual(list(Task.objects.find_available()), [high, low])
        self.assertEqual(list(Task.objects.find_available(queue="other")), [])
        self.assertEqual(list(Task.objects.locked(timezone.now())), [held])
        self.assertEqual(Task.objects.unlocked(timezone.now()).count(), 3)

    def test_failed_and_succeeded__querysets_of_completed_tasks_within_a_time(self) -> None:
        rejects("a")
        notify_user(User.objects.create_user("bob").pk, schedule=0)
        while tasks.run_next_task():
            pass

        self.assertEqual(CompletedTask.objects.failed().get().task_name, rejects.name)
        self.assertEqual(CompletedTask.objects.succeeded().get().task_name, NOTIFY)
        self.assertEqual(CompletedTask.objects.failed(within=timedelta(hours=1)).count(), 1)
        CompletedTask.objects.update(finished_at=timezone.now() - timedelta(hours=2))
        self.assertEqual(CompletedTask.objects.failed(within=timedelta(hours=1)).count(), 0)
        self.assertEqual(CompletedTask.objects.succeeded(within=timedelta(hours=1)).count(), 0)
        # A task that gave up is a CompletedTask: the live queue has none (as there).
        self.assertFalse(Task.objects.failed().exists())

    def test_drop_task__deletes_waiting_tasks_with_these_arguments(self) -> None:
        notify_user(1)
        notify_user(2)

        Task.objects.drop_task(NOTIFY, args=[1])

        self.assertEqual([t.params["args"] for t in Task.objects.all()], [[2]])
