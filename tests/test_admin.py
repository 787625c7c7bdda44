"""The admin: lists, filters, detail pages, actions and the permissions they need."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from django.contrib import admin
from django.contrib.admin.utils import quote
from django.contrib.auth.models import User
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from background_tasks.admin import CompletedTaskAdmin, ScheduleAdmin, TaskAdmin, WorkerAdmin
from background_tasks.conf import app_settings
from background_tasks.models import QUARANTINED, CompletedTask, Schedule, Task, Worker
from tests.fixtures import StaffLogin, row_locked_elsewhere
from tests.testapp.models import TaskRun

if TYPE_CHECKING:
    from django.test.client import _MonkeyPatchedWSGIResponse as Response

pytestmark = pytest.mark.django_db

NEWSLETTER = "tests.testapp.tasks.send_newsletter"
WORKER_ID = "worker-host:4242:cafe"
SCRIPT = "<script>alert('x')</script>"
RAW = "<script>alert("
ESCAPED = "&lt;script&gt;alert("


def make_task(**fields: Any) -> Task:
    values: dict[str, Any] = {
        "task_name": NEWSLETTER,
        "params": {"args": [1], "kwargs": {}},
        "queue": "emails",
    }
    values.update(fields)
    task: Task = Task.objects.create(**values)
    return task


def make_running(**fields: Any) -> Task:
    values: dict[str, Any] = {"locked_by": WORKER_ID, "locked_at": timezone.now(), "attempts": 1}
    values.update(fields)
    return make_task(**values)


def make_completed(**fields: Any) -> CompletedTask:
    now = timezone.now()
    values: dict[str, Any] = {
        "task_id": 1,
        "task_name": NEWSLETTER,
        "params": {"args": [1], "kwargs": {"template": "daily"}},
        "queue": "emails",
        "status": CompletedTask.Status.SUCCEEDED,
        "attempts": 1,
        "started_at": now - timedelta(seconds=2),
        "finished_at": now,
        "worker": WORKER_ID,
    }
    values.update(fields)
    completed: CompletedTask = CompletedTask.objects.create(**values)
    return completed


def make_worker(worker_id: str = WORKER_ID, *, alive: bool = True, **fields: Any) -> Worker:
    age = timedelta(0) if alive else timedelta(seconds=float(app_settings.RESCUE_AFTER) + 60)
    values: dict[str, Any] = {
        "host": "worker-host",
        "pid": 4242,
        "queues": ["default", "emails"],
        "concurrency": 4,
        "last_heartbeat_at": timezone.now() - age,
    }
    values.update(fields)
    worker: Worker = Worker.objects.create(id=worker_id, **values)
    return worker


def admin_url(model: str, view: str = "changelist", *args: int | str) -> str:
    return reverse(f"admin:background_tasks_{model}_{view}", args=[quote(a) for a in args])


def post_action(client: Client, model: str, action: str, objs: list[Any]) -> Response:
    data = {"action": action, "_selected_action": [str(obj.pk) for obj in objs]}
    return client.post(admin_url(model), data, follow=True)


def messages_of(response: Response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def listed(response: Response) -> set[Any]:
    assert response.status_code == 200
    return {obj.pk for obj in response.context["cl"].result_list}


def action_names(response: Response) -> set[str]:
    form = response.context["action_form"]
    return set() if form is None else {name for name, _ in form.fields["action"].choices if name}


def assert_escaped(response: Response) -> None:
    assert response.status_code == 200
    content = response.content.decode()
    assert RAW not in content
    assert ESCAPED in content


# --- registration --------------------------------------------------------------------------


def test_admin_site__registers_an_admin_for_every_model() -> None:
    registered = {model: type(model_admin) for model, model_admin in admin.site._registry.items()}

    assert registered[Task] is TaskAdmin
    assert registered[CompletedTask] is CompletedTaskAdmin
    assert registered[Worker] is WorkerAdmin
    assert registered[Schedule] is ScheduleAdmin


# --- rendering and escaping ---------------------------------------------------------------


def test_task_changelist__shows_each_status_and_escapes_user_data(admin_client: Client) -> None:
    make_task(params={"args": [SCRIPT], "kwargs": {}}, verbose_name=SCRIPT)
    make_task(run_at=timezone.now() + timedelta(hours=1), last_error=SCRIPT)
    make_running(queue=SCRIPT, cancel_requested_at=timezone.now())

    response = admin_client.get(admin_url("task"))

    assert_escaped(response)
    content = response.content.decode()
    for label in ("ready", "scheduled", "running, cancel requested", WORKER_ID, "1 / 5"):
        assert label in content


def test_task_changelist__shows_the_task_name_when_there_is_no_verbose_name(
    admin_client: Client,
) -> None:
    make_task(verbose_name="Weekly newsletter")
    make_task(task_name="tests.testapp.tasks.record", params={"args": ["k"], "kwargs": {}})

    content = admin_client.get(admin_url("task")).content.decode()

    assert "Weekly newsletter" in content
    assert "tests.testapp.tasks.record" in content


def test_task_change_page__shows_params_and_traceback_escaped(admin_client: Client) -> None:
    traceback = f'Traceback (most recent call last):\n  File "x.py"\nValueError: {SCRIPT}'
    task = make_task(
        params={"args": [SCRIPT], "kwargs": {"html": "<b>bold</b>"}}, last_error=traceback
    )

    response = admin_client.get(admin_url("task", "change", task.pk))

    assert_escaped(response)
    content = response.content.decode()
    assert "<b>bold</b>" not in content
    assert "&lt;b&gt;bold&lt;/b&gt;" in content
    assert "<pre" in content
    assert "ValueError: " in content


@pytest.mark.parametrize("model", ["task", "completedtask"])
def test_change_page__shows_missing_values_as_the_empty_value(
    admin_client: Client, model: str
) -> None:
    obj = make_task() if model == "task" else make_completed(started_at=None)

    content = admin_client.get(admin_url(model, "change", obj.pk)).content.decode()

    assert '<div class="readonly">None</div>' not in content
    assert '<div class="readonly">-</div>' in content


def test_task_change_page__links_the_worker_and_a_creator_registered_in_the_admin(
    admin_client: Client, admin_user: User
) -> None:
    task = make_running(
        creator_content_type=ContentType.objects.get_for_model(User),
        creator_object_id=str(admin_user.pk),
    )

    content = admin_client.get(admin_url("task", "change", task.pk)).content.decode()

    assert reverse("admin:auth_user_change", args=[admin_user.pk]) in content
    assert admin_url("worker", "change", WORKER_ID) in content


def test_task_change_page__names_a_creator_the_admin_does_not_show(admin_client: Client) -> None:
    run = TaskRun.objects.create(key="k")
    task = make_task(
        creator_content_type=ContentType.objects.get_for_model(TaskRun),
        creator_object_id=str(run.pk),
    )

    response = admin_client.get(admin_url("task", "change", task.pk))

    assert response.status_code == 200
    assert str(run) in response.content.decode()


def test_completed_task_changelist__shows_status_and_duration_escaped(admin_client: Client) -> None:
    make_completed(verbose_name=SCRIPT, status=CompletedTask.Status.FAILED, last_error=SCRIPT)
    make_completed(worker=SCRIPT, status=CompletedTask.Status.CANCELLED, started_at=None)

    response = admin_client.get(admin_url("completedtask"))

    assert_escaped(response)
    content = response.content.decode()
    assert "failed" in content
    assert "cancelled" in content
    assert "2.00 s" in content


def test_completed_task_change_page__shows_params_result_and_error_escaped(
    admin_client: Client,
) -> None:
    completed = make_completed(
        params={"args": [SCRIPT], "kwargs": {}},
        result={"html": SCRIPT},
        last_error=f"Traceback\nRuntimeError: {SCRIPT}",
        status=CompletedTask.Status.FAILED,
    )

    response = admin_client.get(admin_url("completedtask", "change", completed.pk))

    assert_escaped(response)
    content = response.content.decode()
    assert content.count(ESCAPED) >= 3  # params, result and traceback
    assert 'name="_save"' not in content


def test_completed_task_change_page__shows_the_note_on_a_dropped_result(
    admin_client: Client,
) -> None:
    completed = make_completed(note=f"The result was not stored: {SCRIPT}.")

    response = admin_client.get(admin_url("completedtask", "change", completed.pk))

    assert_escaped(response)
    assert f"The result was not stored: {ESCAPED}" in response.content.decode()


def test_worker_changelist__shows_liveness_and_running_tasks_escaped(admin_client: Client) -> None:
    make_worker(queues=[SCRIPT])
    make_worker("lost-host:1:dead", alive=False, host="lost-host", queues=[])
    make_running()
    make_running()

    response = admin_client.get(admin_url("worker"))

    assert_escaped(response)
    content = response.content.decode()
    assert 'alt="True"' in content
    assert 'alt="False"' in content
    running = {w.pk: w.running_count for w in response.context["cl"].result_list}
    assert running == {WORKER_ID: 2, "lost-host:1:dead": 0}


def test_worker_change_page__renders_read_only(admin_client: Client) -> None:
    make_worker()

    response = admin_client.get(admin_url("worker", "change", WORKER_ID))

    assert response.status_code == 200
    assert 'name="_save"' not in response.content.decode()
    assert WORKER_ID in response.content.decode()


@pytest.mark.parametrize("model", ["task", "completedtask", "worker"])
def test_changelist__query_count_does_not_grow_with_rows(admin_client: Client, model: str) -> None:
    def add_rows(count: int) -> None:
        for i in range(count):
            worker_id = f"host:{model}:{Worker.objects.count()}"
            make_worker(worker_id)
            make_running(locked_by=worker_id)
            make_task(last_error="boom")
            make_completed(task_id=i, status=CompletedTask.Status.FAILED)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get(admin_url(model)).status_code == 200
        return len(captured)

    add_rows(1)
    few = queries()
    add_rows(5)

    assert queries() == few


# --- filters, search, sorting ---------------------------------------------------------------


@pytest.mark.parametrize("status", ["ready", "scheduled", "running", "retrying", "failing"])
def test_task_status_filter__selects_only_tasks_in_that_status(
    admin_client: Client, status: str
) -> None:
    tasks = {
        "ready": make_task(),
        "scheduled": make_task(run_at=timezone.now() + timedelta(days=1)),
        "running": make_running(),
        "retrying": make_task(run_at=timezone.now() + timedelta(minutes=5), last_error="boom"),
    }
    # The states are exclusive: a task waiting for its retry is retrying, not also scheduled.
    # "failing" is the filter's older name for retrying, kept for saved links.
    expected = {
        "ready": {tasks["ready"].pk},
        "scheduled": {tasks["scheduled"].pk},
        "running": {tasks["running"].pk},
        "retrying": {tasks["retrying"].pk},
        "failing": {tasks["retrying"].pk},
    }[status]

    assert listed(admin_client.get(admin_url("task"), {"status": status})) == expected


def test_task_filters__select_by_queue_task_name_and_worker(admin_client: Client) -> None:
    emails = make_task()
    other = make_task(task_name="tests.testapp.tasks.record", queue="default")
    running = make_running()

    assert listed(admin_client.get(admin_url("task"), {"queue": "default"})) == {other.pk}
    assert listed(admin_client.get(admin_url("task"), {"task_name": NEWSLETTER})) == {
        emails.pk,
        running.pk,
    }
    assert listed(admin_client.get(admin_url("task"), {"locked_by": WORKER_ID})) == {running.pk}
    assert listed(admin_client.get(admin_url("task"), {"locked_by__isnull": "True"})) == {
        emails.pk,
        other.pk,
    }


def test_task_search__finds_by_name_verbose_name_hash_queue_and_id(admin_client: Client) -> None:
    newsletter = make_task(verbose_name="Monthly digest")
    record = make_task(
        task_name="tests.testapp.tasks.record", queue="bulk", params={"args": ["x"], "kwargs": {}}
    )

    def search(term: str) -> set[Any]:
        return listed(admin_client.get(admin_url("task"), {"q": term}))

    assert search("send_newsletter") == {newsletter.pk}
    assert search("monthly") == {newsletter.pk}
    assert search(record.task_hash) == {record.pk}
    assert search("bulk") == {record.pk}
    assert search(str(record.pk)) == {record.pk}


def test_task_date_hierarchy__selects_by_run_at(admin_client: Client) -> None:
    run_at = datetime(2031, 3, 4, 5, 6, tzinfo=timezone.get_current_timezone())
    later = make_task(run_at=run_at)
    make_task()

    response = admin_client.get(admin_url("task"), {"run_at__year": "2031", "run_at__month": "3"})

    assert listed(response) == {later.pk}


def test_completed_task_filters__select_by_status_queue_task_name_and_finished_at(
    admin_client: Client,
) -> None:
    old = make_completed(finished_at=timezone.now() - timedelta(days=30), started_at=None)
    failed = make_completed(status=CompletedTask.Status.FAILED, queue="bulk")
    other = make_completed(task_name="tests.testapp.tasks.record")

    def filtered(**params: str) -> set[Any]:
        return listed(admin_client.get(admin_url("completedtask"), params))

    assert filtered(status__exact="failed") == {failed.pk}
    assert filtered(queue="bulk") == {failed.pk}
    assert filtered(task_name="tests.testapp.tasks.record") == {other.pk}
    week_ago = (timezone.now() - timedelta(days=7)).isoformat()
    assert old.pk not in filtered(finished_at__gte=week_ago)
    assert filtered(finished_at__gte=week_ago) == {failed.pk, other.pk}


def test_completed_task_filters__offer_known_tasks_and_queues_without_scanning_history(
    admin_client: Client,
) -> None:
    make_completed(task_name="removed.long_ago", queue="retired")
    make_worker(queues=["reports"])

    with CaptureQueriesContext(connection) as captured:
        response = admin_client.get(admin_url("completedtask"))

    specs = {
        spec.parameter_name: spec
        for spec in response.context["cl"].filter_specs
        if hasattr(spec, "parameter_name")
    }
    names = {value for value, _ in specs["task_name"].lookup_choices}
    queues = {value for value, _ in specs["queue"].lookup_choices}
    assert {NEWSLETTER, "tests.always_fails"} <= names
    assert "removed.long_ago" not in names
    assert {"default", "emails", "reports"} <= queues
    assert "retired" not in queues
    assert not [q["sql"] for q in captured.captured_queries if "DISTINCT" in q["sql"].upper()]


@pytest.mark.parametrize("model", ["task", "completedtask"])
@pytest.mark.parametrize("term", ["²", "١٢", "12²"])
def test_search__a_non_ascii_digit_is_searched_as_text_not_an_error(
    admin_client: Client, model: str, term: str
) -> None:
    make_task(verbose_name=f"power{term}")
    make_completed(verbose_name=f"power{term}")

    response = admin_client.get(admin_url(model), {"q": term})

    assert response.status_code == 200
    assert len(listed(response)) == 1


def test_completed_task_search__finds_by_error_and_original_task_id(admin_client: Client) -> None:
    failed = make_completed(status=CompletedTask.Status.FAILED, last_error="KeyError: 'user'")
    other = make_completed(task_id=987654)

    def search(term: str) -> set[Any]:
        return listed(admin_client.get(admin_url("completedtask"), {"q": term}))

    assert search("KeyError") == {failed.pk}
    assert search("987654") == {other.pk}


def test_completed_task_list__sorts_by_duration(admin_client: Client) -> None:
    now = timezone.now()
    slow = make_completed(started_at=now - timedelta(minutes=5), finished_at=now)
    fast = make_completed(started_at=now - timedelta(seconds=1), finished_at=now)
    response = admin_client.get(admin_url("completedtask"))
    column = response.context["cl"].list_display.index("duration_display")

    response = admin_client.get(admin_url("completedtask"), {"o": str(column)})

    assert [obj.pk for obj in response.context["cl"].result_list] == [fast.pk, slow.pk]
    assert "5 min 0 s" in response.content.decode()


@pytest.mark.parametrize(("state", "expected"), [("alive", {WORKER_ID}), ("lost", {"gone:1:x"})])
def test_worker_state_filter__separates_alive_from_lost(
    admin_client: Client, state: str, expected: set[str]
) -> None:
    make_worker()
    make_worker("gone:1:x", alive=False)

    assert listed(admin_client.get(admin_url("worker"), {"state": state})) == expected


# --- editing a task -------------------------------------------------------------------------


def test_task_change__saves_queue_priority_and_run_at_of_a_waiting_task(
    admin_client: Client,
) -> None:
    task = make_task(last_error="kept")

    response = admin_client.post(
        admin_url("task", "change", task.pk),
        {"queue": "bulk", "priority": "7", "run_at_0": "2031-01-02", "run_at_1": "03:04:05"},
        follow=True,
    )

    assert response.status_code == 200
    task.refresh_from_db()
    assert (task.queue, task.priority) == ("bulk", 7)
    assert task.run_at == datetime(2031, 1, 2, 3, 4, 5, tzinfo=timezone.get_current_timezone())
    assert task.last_error == "kept"


def test_task_change_page__of_a_task_a_worker_holds_is_read_only(admin_client: Client) -> None:
    task = make_running()

    response = admin_client.get(admin_url("task", "change", task.pk))

    content = response.content.decode()
    assert response.status_code == 200
    assert 'name="_save"' not in content
    assert 'name="priority"' not in content
    assert "A worker is running this task" in content


def test_task_change__post_to_a_task_a_worker_holds_changes_nothing(admin_client: Client) -> None:
    task = make_running(priority=1)

    response = admin_client.post(
        admin_url("task", "change", task.pk), {"queue": "bulk", "priority": "9"}, follow=True
    )

    task.refresh_from_db()
    assert (task.queue, task.priority, task.locked_by) == ("emails", 1, WORKER_ID)
    assert any("was not changed" in message for message in messages_of(response))


def test_task_change__keeps_a_lock_a_worker_took_while_the_form_was_open(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = make_task(priority=1)
    original_get_object = TaskAdmin.get_object

    def get_object_then_worker_claims(self: TaskAdmin, *args: Any, **kwargs: Any) -> Task | None:
        obj = original_get_object(self, *args, **kwargs)
        Task.objects.filter(pk=task.pk).update(locked_by=WORKER_ID, locked_at=timezone.now())
        return obj

    monkeypatch.setattr(TaskAdmin, "get_object", get_object_then_worker_claims)

    response = admin_client.post(
        admin_url("task", "change", task.pk),
        {"queue": "emails", "priority": "9", "run_at_0": "2031-01-02", "run_at_1": "03:04:05"},
        follow=True,
    )

    task.refresh_from_db()
    assert (task.priority, task.locked_by) == (1, WORKER_ID)
    assert any("was not changed" in message for message in messages_of(response))


def test_task_admin__offers_no_add_and_no_delete(admin_client: Client) -> None:
    task = make_task()

    assert admin_client.get(admin_url("task", "add")).status_code == 403
    assert admin_client.get(admin_url("task", "delete", task.pk)).status_code == 403
    assert (
        admin_client.post(admin_url("task", "delete", task.pk), {"post": "yes"}).status_code == 403
    )
    assert "delete_selected" not in action_names(admin_client.get(admin_url("task")))
    assert Task.objects.filter(pk=task.pk).exists()


# --- task actions ---------------------------------------------------------------------------


def test_run_now_action__makes_a_scheduled_task_ready(admin_client: Client) -> None:
    task = make_task(run_at=timezone.now() + timedelta(days=2))
    assert task.status == "scheduled"

    response = post_action(admin_client, "task", "run_now", [task])

    task.refresh_from_db()
    assert task.status == "ready"
    assert "1 task will run now." in messages_of(response)


def test_run_now_action__skips_tasks_a_worker_holds_and_says_how_many(
    admin_client: Client,
) -> None:
    future = timezone.now() + timedelta(days=2)
    waiting = make_task(run_at=future)
    running = make_running(run_at=future)

    response = post_action(admin_client, "task", "run_now", [waiting, running])

    waiting.refresh_from_db()
    running.refresh_from_db()
    assert waiting.status == "ready"
    assert (running.run_at, running.locked_by) == (future, WORKER_ID)
    assert messages_of(response) == [
        "1 task will run now.",
        "1 task skipped: a worker is running it, or it finished.",
    ]


def make_quarantined() -> Task:
    return make_task(
        locked_by=QUARANTINED, locked_at=timezone.now(), last_error="its result was refused"
    )


@pytest.mark.parametrize("action", ["run_now", "cancel"])
def test_run_now_and_cancel_actions__leave_a_quarantined_task_alone_and_say_so(
    admin_client: Client, action: str
) -> None:
    quarantined = make_quarantined()

    response = post_action(admin_client, "task", action, [quarantined])

    quarantined.refresh_from_db()
    assert (quarantined.locked_by, quarantined.cancel_requested_at) == (QUARANTINED, None)
    assert not CompletedTask.objects.exists()
    [*_, said] = messages_of(response)
    assert said.startswith("1 task skipped: it is quarantined, and no worker will run it.")


def test_quarantined_task__its_page_says_why_and_offers_delete(admin_client: Client) -> None:
    quarantined = make_quarantined()

    page = admin_client.get(admin_url("task", "change", quarantined.pk))
    assert any(m.startswith("This task is quarantined") for m in messages_of(page))
    assert admin_url("task", "delete", quarantined.pk) in page.content.decode()

    response = admin_client.post(admin_url("task", "delete", quarantined.pk), {"post": "yes"})
    assert response.status_code == 302
    assert not Task.objects.filter(pk=quarantined.pk).exists()


def test_quarantined_task__deleted_only_while_still_quarantined() -> None:
    task = make_quarantined()
    Task.objects.filter(pk=task.pk).update(locked_by=None)  # released meanwhile, by hand

    TaskAdmin(Task, admin.site).delete_model(None, task)  # type: ignore[arg-type]

    assert Task.objects.filter(pk=task.pk).exists()


def test_cancel_action__records_waiting_task_as_cancelled(admin_client: Client) -> None:
    task = make_task(run_at=timezone.now() + timedelta(days=1))

    response = post_action(admin_client, "task", "cancel", [task])

    assert not Task.objects.filter(pk=task.pk).exists()
    completed = CompletedTask.objects.get(task_id=task.pk)
    assert completed.status == CompletedTask.Status.CANCELLED
    assert completed.last_error == "Cancelled by admin in the admin."
    assert messages_of(response) == ["1 task cancelled."]


def test_cancel_action__asks_a_running_task_to_stop(admin_client: Client) -> None:
    waiting = make_task()
    running = make_running()

    response = post_action(admin_client, "task", "cancel", [waiting, running])

    running.refresh_from_db()
    assert running.cancel_requested_at is not None
    assert running.locked_by == WORKER_ID
    assert not CompletedTask.objects.filter(task_id=running.pk).exists()
    assert CompletedTask.objects.get(task_id=waiting.pk).status == CompletedTask.Status.CANCELLED
    assert messages_of(response)[0] == "1 task cancelled."
    assert messages_of(response)[1].startswith("Cancel requested for 1 running task")


def test_task_actions__are_hidden_from_a_user_who_may_only_view(staff: StaffLogin) -> None:
    client = staff("view_task")
    future = timezone.now() + timedelta(days=1)
    task = make_task(run_at=future)

    assert action_names(client.get(admin_url("task"))) == set()
    post_action(client, "task", "run_now", [task])
    post_action(client, "task", "cancel", [task])

    task.refresh_from_db()
    assert task.run_at == future


def test_task_actions__need_the_change_permission(staff: StaffLogin) -> None:
    client = staff("view_task", "change_task")
    task = make_task(run_at=timezone.now() + timedelta(days=1))

    assert action_names(client.get(admin_url("task"))) == {"run_now", "cancel"}
    post_action(client, "task", "run_now", [task])

    task.refresh_from_db()
    assert task.status == "ready"


def test_task_actions__are_refused_to_a_user_without_task_permissions(staff: StaffLogin) -> None:
    client = staff("view_completedtask")
    task = make_task()

    response = client.post(admin_url("task"), {"action": "cancel", "_selected_action": [task.pk]})

    assert response.status_code == 403
    assert Task.objects.filter(pk=task.pk).exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("action", ["run_now", "cancel"])
def test_task_action__skips_a_row_a_claim_is_locking_without_waiting(
    admin_client: Client, action: str
) -> None:
    if not connection.features.has_select_for_update_skip_locked:
        pytest.skip("the database has no SELECT ... FOR UPDATE SKIP LOCKED")
    future = timezone.now() + timedelta(days=1)
    claimed = make_task(run_at=future)
    free = make_task(run_at=future)
    with row_locked_elsewhere(claimed.pk):  # a worker between its claim and its commit
        started = time.monotonic()
        response = post_action(admin_client, "task", action, [claimed, free])
        elapsed = time.monotonic() - started

    # Had the action waited for the row, it would have waited until the lock was released.
    assert elapsed < 5

    claimed.refresh_from_db()
    assert claimed.run_at == future
    if action == "run_now":
        assert Task.objects.get(pk=free.pk).status == "ready"
    else:
        assert not Task.objects.filter(pk=free.pk).exists()
    assert response.status_code == 200


# --- completed tasks ------------------------------------------------------------------------


def test_retry_action__enqueues_a_fresh_task_with_no_attempts(admin_client: Client) -> None:
    completed = make_completed(
        status=CompletedTask.Status.FAILED, attempts=5, last_error="boom", priority=3
    )

    response = post_action(admin_client, "completedtask", "retry", [completed])

    fresh = Task.objects.get()
    assert (fresh.task_name, fresh.params, fresh.queue, fresh.priority) == (
        completed.task_name,
        completed.params,
        completed.queue,
        3,
    )
    assert fresh.attempts == 0
    assert fresh.last_error == ""
    assert fresh.status == "ready"
    assert CompletedTask.objects.filter(pk=completed.pk).exists()
    assert messages_of(response) == ["1 task queued again."]


def test_retry_action__needs_the_add_task_permission(staff: StaffLogin) -> None:
    client = staff("view_completedtask", "change_task", "delete_completedtask")
    completed = make_completed(status=CompletedTask.Status.FAILED)

    assert "retry" not in action_names(client.get(admin_url("completedtask")))
    post_action(client, "completedtask", "retry", [completed])

    assert not Task.objects.exists()


def test_retry_action__is_offered_to_a_user_who_may_add_tasks(staff: StaffLogin) -> None:
    client = staff("view_completedtask", "add_task")
    completed = make_completed(status=CompletedTask.Status.FAILED)

    assert action_names(client.get(admin_url("completedtask"))) == {"retry"}
    post_action(client, "completedtask", "retry", [completed])

    assert Task.objects.get().attempts == 0


def test_completed_task_admin__is_read_only_with_no_add(admin_client: Client) -> None:
    completed = make_completed()

    assert admin_client.get(admin_url("completedtask", "add")).status_code == 403
    response = admin_client.post(admin_url("completedtask", "change", completed.pk), {"queue": "x"})
    assert response.status_code == 403
    completed.refresh_from_db()
    assert completed.queue == "emails"


def test_completed_task_admin__deletes_history(admin_client: Client) -> None:
    completed = make_completed()

    response = admin_client.post(
        admin_url("completedtask", "delete", completed.pk), {"post": "yes"}, follow=True
    )

    assert response.status_code == 200
    assert not CompletedTask.objects.exists()


# --- workers --------------------------------------------------------------------------------


def test_worker_admin__offers_no_add_and_no_change(admin_client: Client) -> None:
    make_worker()

    assert admin_client.get(admin_url("worker", "add")).status_code == 403
    response = admin_client.post(admin_url("worker", "change", WORKER_ID), {"host": "x"})
    assert response.status_code == 403
    assert Worker.objects.get().host == "worker-host"


def test_worker_delete__is_refused_for_an_alive_worker(admin_client: Client) -> None:
    make_worker()

    response = admin_client.post(admin_url("worker", "delete", WORKER_ID), {"post": "yes"})

    assert response.status_code == 403
    assert Worker.objects.filter(pk=WORKER_ID).exists()


def test_worker_delete__removes_a_lost_worker(admin_client: Client) -> None:
    make_worker(alive=False)

    response = admin_client.post(
        admin_url("worker", "delete", WORKER_ID), {"post": "yes"}, follow=True
    )

    assert response.status_code == 200
    assert not Worker.objects.exists()


def test_delete_lost_action__deletes_lost_workers_and_keeps_alive_ones(
    admin_client: Client,
) -> None:
    alive = make_worker()
    lost = make_worker("gone:1:x", alive=False)

    response = admin_client.get(admin_url("worker"))
    assert action_names(response) == {"delete_lost"}
    response = post_action(admin_client, "worker", "delete_lost", [alive, lost])

    assert set(Worker.objects.values_list("pk", flat=True)) == {WORKER_ID}
    assert messages_of(response) == [
        "1 lost worker deleted.",
        "1 worker kept: it is alive.",
    ]


def test_delete_lost_action__needs_the_delete_permission(staff: StaffLogin) -> None:
    client = staff("view_worker")
    lost = make_worker(alive=False)

    assert action_names(client.get(admin_url("worker"))) == set()
    post_action(client, "worker", "delete_lost", [lost])

    assert Worker.objects.filter(pk=lost.pk).exists()
