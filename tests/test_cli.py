"""``manage.py background_tasks``: the operator command, one subcommand at a time."""

from __future__ import annotations

import json
import re
import time
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection
from django.db.models.signals import pre_delete
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from background_tasks import operations
from background_tasks.models import QUARANTINED, CompletedTask, Task, Worker
from background_tasks.testing import run_tasks
from tests.fixtures import make_completed, make_task, row_locked_elsewhere
from tests.helpers import run_command
from tests.testapp import tasks

pytestmark = pytest.mark.django_db

NEWSLETTER = "tests.testapp.tasks.send_newsletter"


def run(*args: str) -> str:
    out = StringIO()
    call_command("background_tasks", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def run_json(*args: str) -> Any:
    return json.loads(run(*args, "--json"))


def hours(n: float) -> timedelta:
    return timedelta(hours=n)


def skip_without_skip_locked() -> None:
    if not connection.features.has_select_for_update_skip_locked:
        pytest.skip(f"{connection.vendor} has no row locks to skip")


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "bad"),
    [
        (["list", "--status", "sleeping"], "'sleeping'"),
        (["list", "--status", "succeeded"], "'succeeded'"),
        (["history", "--status", "running"], "'running'"),
        (["prune", "--older-than", "7", "--status", "ready"], "'ready'"),
        (["list", "--limit", "-1"], "'-1'"),
        (["list", "--limit", "0"], "'0'"),
        (["history", "--limit", "ten"], "'ten'"),
        (["show", "abc"], "'abc'"),
        (["show", "-3"], "'-3'"),
        (["cancel", "1", "x2"], "'x2'"),
        (["run-now", "1.5"], "'1.5'"),
        (["retry", "0"], "'0'"),
        (["prune", "--older-than", "-1"], "'-1'"),
        (["prune", "--older-than", "a week"], "'a week'"),
        (["prune", "--older-than", "nan"], "'nan'"),
        (["prune", "--older-than", "7", "--batch-size", "0"], "'0'"),
        (["show", str(2**63)], str(2**63)),
        (["cancel", "1", "99999999999999999999999"], "99999999999999999999999"),
        (["list", "--limit", str(10**30)], str(10**30)),
        (["history", "--limit", "2147483648"], "2147483648"),
        (["prune", "--older-than", "7", "--batch-size", str(2**64)], str(2**64)),
        (["list", "--queue", " "], "queue name cannot be empty"),
        (["list", "--name", ""], "task name cannot be empty"),
        (["health", "--max-heartbeat-age", "0"], "expected a finite number > 0, got '0'"),
    ],
)
def test_bad_input__is_an_error_naming_the_value(args: list[str], bad: str) -> None:
    with pytest.raises(CommandError, match=bad):
        run(*args)


def test_bad_input__missing_subcommand_is_an_error() -> None:
    with pytest.raises(CommandError, match="SUBCOMMAND"):
        run()


def test_bad_input__unknown_subcommand_is_an_error() -> None:
    with pytest.raises(CommandError, match="'frobnicate'"):
        run("frobnicate")


def test_bad_input__cancel_needs_an_id() -> None:
    with pytest.raises(CommandError, match="ID"):
        run("cancel")


def test_bad_input__prune_needs_older_than() -> None:
    with pytest.raises(CommandError, match="--older-than"):
        run("prune")


@pytest.mark.django_db
def test_bad_input__prune_older_than_before_the_year_one_is_an_error_not_a_traceback() -> None:
    with pytest.raises(CommandError, match=r"--older-than 999999: .* before the year 1"):
        run("prune", "--older-than", "999999")


@pytest.mark.django_db(transaction=True)
def test_command_line__exits_non_zero_on_bad_value_and_unknown_id() -> None:
    bad_value = run_command("background_tasks", "cancel", "abc")
    unknown = run_command("background_tasks", "cancel", "987654")

    assert bad_value.returncode != 0
    assert "'abc'" in bad_value.stderr
    assert unknown.returncode == 1
    assert "No task has id 987654." in unknown.stderr


# -- list -----------------------------------------------------------------------------------


def test_list__shows_live_tasks_in_a_table() -> None:
    task = make_task(queue="emails", priority=3)

    out = run("list")

    header, row = out.splitlines()
    assert header.split() == [
        "ID",
        "NAME",
        "QUEUE",
        "PRIORITY",
        "RUN",
        "AT",
        "ATTEMPTS",
        "STATUS",
        "WORKER",
    ]
    assert row.split()[:4] == [str(task.pk), NEWSLETTER, "emails", "3"]
    assert row.split()[-3:] == ["0/5", "ready", "-"]


def test_list__shows_the_worker_of_a_running_task() -> None:
    make_task(locked_by="host:1:abc", locked_at=timezone.now(), attempts=1)

    row = run("list").splitlines()[1]

    assert row.split()[-2:] == ["running", "host:1:abc"]


def test_list__says_so_when_no_task_matches() -> None:
    assert run("list").strip() == "No tasks."


def test_list__filters_by_queue() -> None:
    make_task(queue="emails")
    other = make_task(queue="reports")

    assert run_json("list", "--queue", "reports") == [run_json("show", str(other.pk))]


@pytest.mark.parametrize("status", ["ready", "scheduled", "running", "retrying"])
def test_list__filters_by_status(status: str) -> None:
    now = timezone.now()
    by_status = {
        "ready": make_task(run_at=now - hours(1)),
        "scheduled": make_task(run_at=now + hours(1)),
        "running": make_task(locked_by="w", locked_at=now, last_error="an earlier attempt failed"),
        "retrying": make_task(run_at=now + hours(1), last_error="Traceback ...", attempts=1),
    }

    listed = run_json("list", "--status", status)

    assert [t["id"] for t in listed] == [by_status[status].pk]
    assert listed[0]["status"] == status


def test_list__status_failing_is_still_accepted_as_retrying() -> None:
    make_task()
    retrying = make_task(last_error="Traceback ...", attempts=1)

    listed = run_json("list", "--status", "failing")

    assert [(t["id"], t["status"]) for t in listed] == [(retrying.pk, "retrying")]


def test_list__filters_by_full_or_short_name() -> None:
    newsletter = make_task()
    make_task(task_name="tests.testapp.tasks.record")
    make_task(task_name="other.send_newsletter_later")

    assert [t["id"] for t in run_json("list", "--name", NEWSLETTER)] == [newsletter.pk]
    assert [t["id"] for t in run_json("list", "--name", "send_newsletter")] == [newsletter.pk]
    assert [t["id"] for t in run_json("list", "--name", "tasks.send_newsletter")] == [newsletter.pk]


def test_list__limit_caps_the_rows_and_says_more_match() -> None:
    now = timezone.now()
    first, second, _ = (make_task(run_at=now - hours(3 - i)) for i in range(3))

    out = run("list", "--limit", "2")

    assert [line.split()[0] for line in out.splitlines()[1:3]] == [str(first.pk), str(second.pk)]
    assert "more match" in out
    assert "more match" not in run("list", "--limit", "3")


def test_list__json_gives_every_field() -> None:
    task = make_task(verbose_name="Weekly newsletter", params={"args": [7], "kwargs": {"x": 1}})

    (listed,) = run_json("list")

    assert listed["id"] == task.pk
    assert listed["params"] == {"args": [7], "kwargs": {"x": 1}}
    assert listed["verbose_name"] == "Weekly newsletter"
    assert listed["status"] == "ready"
    assert listed["locked_by"] is None


def test_list__escapes_control_characters_in_stored_data() -> None:
    make_task(verbose_name="evil\x1b[2Jname")

    out = run("list")

    assert "\x1b" not in out
    assert "evil\\x1b[2Jname" in out


def test_list_json__escapes_c1_control_characters_and_keeps_readable_text() -> None:
    make_task(verbose_name="csi\x9b2Jé\u2028end")

    out = run("list", "--json")

    assert "\x9b" not in out and "\u2028" not in out
    assert "csi\\u009b2Jé\\u2028end" in out
    assert json.loads(out)[0]["verbose_name"] == "csi\x9b2Jé\u2028end"


def test_list__shows_a_quarantined_row_as_quarantined_not_running() -> None:
    make_task(locked_by=QUARANTINED, locked_at=timezone.now(), last_error="cannot be loaded")

    (listed,) = run_json("list", "--status", "quarantined")

    assert listed["status"] == "quarantined"
    assert run_json("list", "--status", "running") == []


# -- history --------------------------------------------------------------------------------


def test_history__shows_completed_tasks_newest_first() -> None:
    now = timezone.now()
    old = make_completed(CompletedTask.Status.SUCCEEDED, finished_at=now - hours(2), task_id=1)
    new = make_completed(
        CompletedTask.Status.FAILED,
        finished_at=now,
        started_at=now - timedelta(seconds=3),
        task_id=2,
    )

    lines = run("history").splitlines()

    assert lines[0].split()[:3] == ["ID", "TASK", "ID"]
    assert lines[1].split()[:5] == [str(new.pk), "2", NEWSLETTER, "default", "failed"]
    assert "3.0s" in lines[1]
    assert lines[2].split()[:5] == [str(old.pk), "1", NEWSLETTER, "default", "succeeded"]


def test_history__filters_by_status_and_name() -> None:
    failed = make_completed(CompletedTask.Status.FAILED)
    make_completed(CompletedTask.Status.SUCCEEDED)
    make_completed(CompletedTask.Status.FAILED, task_name="tests.testapp.tasks.record")

    listed = run_json("history", "--status", "failed", "--name", "send_newsletter")

    assert [r["id"] for r in listed] == [failed.pk]
    assert listed[0]["status"] == "failed"


def test_history__says_so_when_empty() -> None:
    assert run("history").strip() == "No completed tasks."


def test_history__a_name_that_matches_nothing_says_what_was_searched() -> None:
    make_completed(CompletedTask.Status.SUCCEEDED)

    out = run("history", "--name", "send_newsleter", "--status", "succeeded").strip()

    assert out == (
        "No completed task matches --status succeeded --name send_newsleter (the name "
        "'send_newsleter' or a name ending in '.send_newsleter'); there are 1 completed "
        "task(s) in all."
    )


def test_list__a_filter_that_matches_nothing_says_what_was_searched() -> None:
    tasks.send_newsletter(1)

    out = run("list", "--queue", "nowhere").strip()

    assert out == "No task matches --queue nowhere; there are 1 task(s) in all."


def test_history__limit_caps_the_rows() -> None:
    for _ in range(3):
        make_completed()

    assert len(run_json("history", "--limit", "2")) == 2


# -- show -----------------------------------------------------------------------------------


def test_show__prints_every_field_with_params_and_last_error() -> None:
    task = make_task(
        params={"args": [42], "kwargs": {"template": "daily"}},
        last_error="Traceback (most recent call last):\n  boom\nRuntimeError: boom",
        attempts=2,
        queue="emails",
    )

    out = run("show", str(task.pk))

    fields = dict(line.split(None, 1) for line in out.split("\n\n")[0].splitlines())
    assert fields["id"] == str(task.pk)
    assert fields["task_name"] == NEWSLETTER
    assert fields["queue"] == "emails"
    assert fields["attempts"] == "2"
    assert fields["status"] == "retrying"
    assert fields["locked_by"] == "-"
    assert {"run_at", "created_at", "task_hash", "priority", "cancel_requested_at"} <= set(fields)
    assert '"template": "daily"' in out
    assert "last_error:\nTraceback (most recent call last):\n  boom\nRuntimeError: boom" in out


def test_show__completed_prints_the_record_with_result() -> None:
    record = make_completed(CompletedTask.Status.SUCCEEDED, result={"sent": 3}, worker="w1")

    out = run("show", "--completed", str(record.pk))

    assert "task_id" in out and "10000" in out
    assert "succeeded" in out
    assert 'result:\n{\n  "sent": 3\n}' in out


def test_show__json_gives_every_field() -> None:
    task = make_task(params={"args": [1], "kwargs": {}}, last_error="boom")

    shown = run_json("show", str(task.pk))

    assert shown["id"] == task.pk
    assert shown["params"] == {"args": [1], "kwargs": {}}
    assert shown["last_error"] == "boom"
    assert shown["status"] == "retrying"
    assert shown["run_at"] == task.run_at.isoformat()


def test_show__unknown_id_is_an_error() -> None:
    with pytest.raises(CommandError, match=re.escape("No live task has id 424242.")):
        run("show", "424242")
    with pytest.raises(CommandError, match=re.escape("No completed task has id 424242.")):
        run("show", "--completed", "424242")


def test_show__id_of_a_finished_task_points_to_its_record() -> None:
    task = tasks.send_newsletter(5)
    run_tasks()
    record = CompletedTask.objects.get(task_id=task.pk)

    with pytest.raises(
        CommandError, match=rf"finished \(succeeded\): see `show --completed {record.pk}`"
    ):
        run("show", str(task.pk))


# -- cancel ---------------------------------------------------------------------------------


def test_cancel__records_waiting_task_as_cancelled() -> None:
    task = make_task(run_at=timezone.now() + hours(1))

    out = run("cancel", str(task.pk))

    assert f"Cancelled: {task.pk}" in out
    assert not Task.objects.filter(pk=task.pk).exists()
    record = CompletedTask.objects.get(task_id=task.pk)
    assert record.status == CompletedTask.Status.CANCELLED


def test_cancel__asks_the_worker_of_a_running_task_to_stop_it() -> None:
    task = make_task(locked_by="host:1:abc", locked_at=timezone.now(), attempts=1)

    out = run("cancel", str(task.pk))

    assert f"cancel requested (the task stops when it next checks is_cancelled()): {task.pk}" in out
    task.refresh_from_db()
    assert task.cancel_requested_at is not None
    assert task.locked_by == "host:1:abc"
    assert not CompletedTask.objects.exists()


def test_cancel__reports_unknown_ids_after_cancelling_the_others() -> None:
    task = make_task()

    out = StringIO()
    with pytest.raises(CommandError, match=re.escape("No task has these ids: 424242, 424243.")):
        call_command("background_tasks", "cancel", "424242", str(task.pk), "424243", stdout=out)

    assert f"Cancelled: {task.pk}" in out.getvalue()
    assert not Task.objects.filter(pk=task.pk).exists()


def test_cancel__reports_a_task_that_already_finished() -> None:
    task = tasks.send_newsletter(5)
    run_tasks()

    out = run("cancel", str(task.pk))

    assert f"Task {task.pk} already finished (succeeded)" in out
    assert CompletedTask.objects.get().status == CompletedTask.Status.SUCCEEDED


def test_cancel__repeated_id_is_cancelled_once() -> None:
    task = make_task()

    run("cancel", str(task.pk), str(task.pk))

    assert CompletedTask.objects.filter(task_id=task.pk).count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("held_by", [None, "host:1:abc"], ids=["waiting", "running"])
def test_cancel__skips_rows_locked_by_another_transaction(held_by: str | None) -> None:
    locked = make_task(locked_by=held_by, locked_at=timezone.now() if held_by else None)
    free = make_task()

    skip_without_skip_locked()
    with row_locked_elsewhere(locked.pk):
        started = time.monotonic()
        out = run("cancel", str(locked.pk), str(free.pk))
        elapsed = time.monotonic() - started

    assert elapsed < 5
    assert f"Cancelled: {free.pk}" in out
    assert f"Skipped (locked by another transaction; try again): {locked.pk}" in out
    locked.refresh_from_db()
    assert locked.cancel_requested_at is None
    assert not Task.objects.filter(pk=free.pk).exists()


# -- run-now --------------------------------------------------------------------------------


def test_run_now__makes_a_scheduled_task_ready() -> None:
    task = tasks.send_newsletter(9, schedule=3600)
    assert run_tasks() == 0

    out = run("run-now", str(task.pk))

    assert f"Made ready now: {task.pk}" in out
    assert run_tasks() == 1
    assert tasks.CALLS == [((9,), {"template": "weekly"})]


def test_run_now__leaves_a_ready_task_in_its_place() -> None:
    run_at = timezone.now() - hours(1)
    task = make_task(run_at=run_at)

    out = run("run-now", str(task.pk))

    assert f"Already ready, left in place: {task.pk}" in out
    task.refresh_from_db()
    assert task.run_at == run_at


def test_run_now__skips_a_running_task() -> None:
    run_at = timezone.now() + hours(1)
    task = make_task(run_at=run_at, locked_by="w", locked_at=timezone.now())

    out = run("run-now", str(task.pk))

    assert f"Skipped (running on a worker): {task.pk}" in out
    task.refresh_from_db()
    assert task.run_at == run_at


def test_run_now__unknown_id_is_an_error() -> None:
    with pytest.raises(CommandError, match=re.escape("No task has id 424242.")):
        run("run-now", "424242")


@pytest.mark.django_db(transaction=True)
def test_run_now__skips_rows_locked_by_another_transaction() -> None:
    later = timezone.now() + hours(1)
    locked, free = make_task(run_at=later), make_task(run_at=later)

    skip_without_skip_locked()
    with row_locked_elsewhere(locked.pk):
        started = time.monotonic()
        out = run("run-now", str(locked.pk), str(free.pk))
        elapsed = time.monotonic() - started

    assert elapsed < 5
    assert f"Made ready now: {free.pk}" in out
    assert f"Skipped (locked by another transaction; try again): {locked.pk}" in out
    locked.refresh_from_db()
    free.refresh_from_db()
    assert locked.run_at == later
    assert free.run_at < later


# -- retry ----------------------------------------------------------------------------------


def test_retry__enqueues_a_completed_task_again() -> None:
    tasks.always_fails()
    run_tasks()
    record = CompletedTask.objects.get(status=CompletedTask.Status.FAILED)

    out = run("retry", str(record.pk))

    task = Task.objects.get()
    assert f"Completed task {record.pk} enqueued again as task {task.pk}." in out
    assert (task.task_name, task.attempts, task.last_error) == ("tests.always_fails", 0, "")
    assert task.run_at <= timezone.now()
    assert CompletedTask.objects.filter(pk=record.pk).exists()


def test_retry__all_failed_enqueues_every_failed_task() -> None:
    first = make_completed(params={"args": [1], "kwargs": {}})
    second = make_completed(params={"args": [2], "kwargs": {}})
    make_completed(CompletedTask.Status.SUCCEEDED, params={"args": [3], "kwargs": {}})
    make_completed(CompletedTask.Status.CANCELLED, params={"args": [4], "kwargs": {}})

    out = run("retry", "--all-failed")

    assert f"Completed task {first.pk} enqueued again" in out
    assert f"Completed task {second.pk} enqueued again" in out
    assert "Enqueued 2 failed task(s) again." in out
    assert sorted(t.params["args"][0] for t in Task.objects.all()) == [1, 2]


def test_retry__all_failed_filters_by_name() -> None:
    make_completed(params={"args": [1], "kwargs": {}})
    make_completed(task_name="tests.always_fails", params={"args": [], "kwargs": {}})

    run("retry", "--all-failed", "--name", "always_fails")

    assert list(Task.objects.values_list("task_name", flat=True)) == ["tests.always_fails"]


def test_retry__all_failed_twice_enqueues_each_call_once() -> None:
    tasks.always_fails()
    run_tasks()

    run("retry", "--all-failed")
    second = run("retry", "--all-failed")
    assert Task.objects.count() == 1
    assert second.strip() == "No failed tasks to retry."

    run_tasks()  # the retried copy fails again: only that newest failure is retried
    run("retry", "--all-failed")
    assert Task.objects.count() == 1


def test_retry__all_failed_leaves_a_repeating_task_whose_next_occurrence_is_queued() -> None:
    # The next occurrence is inserted with the failure, its created_at equal to the record's
    # finished_at: that call is queued again, so retrying it would run the series twice.
    tasks.always_fails(repeat=Task.HOURLY)
    run_tasks()
    record = CompletedTask.objects.get(status=CompletedTask.Status.FAILED)
    follower = Task.objects.get()
    assert follower.created_at == record.finished_at

    out = run("retry", "--all-failed")

    assert out.strip() == "No failed tasks to retry."
    assert list(Task.objects.values_list("pk", flat=True)) == [follower.pk]
    # Named by its id, it is retried: the operator asked for that run.
    run("retry", str(record.pk))
    assert Task.objects.count() == 2


def test_retry__all_failed_retries_a_failure_whose_own_record_was_created_as_it_finished() -> None:
    # A record created and finished at the same instant (a coarse clock) is not its own retry.
    at = timezone.now()
    record = make_completed(created_at=at, finished_at=at)

    out = run("retry", "--all-failed")

    assert f"Completed task {record.pk} enqueued again" in out


def test_retry__reads_many_completed_tasks_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(operations, "RETRY_CHUNK", 2)
    records = [make_completed(params={"args": [n], "kwargs": {}}) for n in range(5)]

    run("retry", *(str(r.pk) for r in records))

    assert sorted(t.params["args"][0] for t in Task.objects.all()) == [0, 1, 2, 3, 4]


def test_retry__unknown_id_is_an_error_after_retrying_the_others() -> None:
    record = make_completed()

    with pytest.raises(CommandError, match=re.escape("No completed task has id 424242.")):
        run("retry", str(record.pk), "424242")

    assert Task.objects.count() == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "Give the ids of completed tasks to retry, or --all-failed"),
        (["1", "--all-failed"], "either completed task ids or --all-failed, not both"),
        (["1", "--name", "x"], "--name only goes with --all-failed"),
    ],
)
def test_retry__needs_ids_or_all_failed(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        run("retry", *args)


# -- tasks ----------------------------------------------------------------------------------


def test_tasks__lists_registered_tasks_with_the_options_they_run_with() -> None:
    out = run("tasks")

    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:]}
    assert rows[NEWSLETTER] == ["emails", "0", "5", "-"]
    assert rows["tests.overruns"] == ["default", "0", "2", "1.0s"]
    assert rows["tests.testapp.tasks.record"] == ["default", "0", "25", "-"]


def test_tasks__json() -> None:
    described = {t["name"]: t for t in run_json("tasks")}

    assert described["tests.always_fails"] == {
        "name": "tests.always_fails",
        "queue": "default",
        "priority": 0,
        "max_attempts": 3,
        "timeout": None,
    }


# -- workers --------------------------------------------------------------------------------


def test_workers__shows_live_and_lost_workers() -> None:
    now = timezone.now()
    Worker.objects.create(id="web1:10:aa", host="web1", pid=10, queues=["emails"], concurrency=4)
    Worker.objects.create(id="web2:20:bb", host="web2", pid=20, last_heartbeat_at=now - hours(1))
    make_task(locked_by="web1:10:aa", locked_at=now)

    out = run("workers")

    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:3]}
    assert rows["web1:10:aa"][1:6] == ["web1", "10", "emails", "4", "1"]
    assert rows["web1:10:aa"][-1] == "alive"
    assert rows["web2:20:bb"][3] == "*"
    assert rows["web2:20:bb"][-1] == "lost"
    assert "1 worker(s) sent no heartbeat" in out


def test_workers__json() -> None:
    Worker.objects.create(id="w", host="h", pid=1, last_heartbeat_at=timezone.now() - hours(1))

    (worker,) = run_json("workers")

    assert worker["id"] == "w"
    assert worker["state"] == "lost"
    assert worker["heartbeat_age_seconds"] >= 3600
    assert worker["running"] == 0


def test_workers__says_so_when_none() -> None:
    assert run("workers").strip() == "No workers are registered."


# -- stats ----------------------------------------------------------------------------------


def test_stats__counts_per_queue_and_status() -> None:
    now = timezone.now()
    make_task(queue="emails")
    make_task(queue="emails")
    make_task(queue="emails", run_at=now + hours(1))
    make_task(queue="reports", locked_by="w", locked_at=now)
    make_task(queue="reports", last_error="boom")
    make_task(queue="reports", locked_by=QUARANTINED, locked_at=now, last_error="bad row")
    make_completed(CompletedTask.Status.SUCCEEDED, queue="emails")
    make_completed(CompletedTask.Status.FAILED, queue="archive")
    make_completed(CompletedTask.Status.CANCELLED, queue="emails", finished_at=now - hours(25))

    stats = run_json("stats")

    queues = {row.pop("queue"): row for row in stats["queues"]}
    zero = dict.fromkeys(
        [
            "ready",
            "scheduled",
            "running",
            "retrying",
            "quarantined",
            "succeeded",
            "failed",
            "cancelled",
        ],
        0,
    )
    assert queues == {
        "archive": {**zero, "failed": 1},
        "emails": {**zero, "ready": 2, "scheduled": 1, "succeeded": 1},
        "reports": {**zero, "running": 1, "retrying": 1, "quarantined": 1},
    }
    assert stats["total"] == {
        **zero,
        "ready": 2,
        "scheduled": 1,
        "running": 1,
        "retrying": 1,
        "quarantined": 1,
        "succeeded": 1,
        "failed": 1,
    }


def test_stats__table_has_a_row_per_queue_and_a_total() -> None:
    make_task(queue="emails")
    make_task(queue="reports")
    make_task(queue="reports")

    lines = run("stats").splitlines()

    assert lines[1].split() == [
        "QUEUE",
        "READY",
        "SCHEDULED",
        "RUNNING",
        "RETRYING",
        "QUARANTINED",
        "SUCCEEDED",
        "FAILED",
        "CANCELLED",
    ]
    assert lines[2].split() == ["emails", "1", "0", "0", "0", "0", "0", "0", "0"]
    assert lines[3].split() == ["reports", "2", "0", "0", "0", "0", "0", "0", "0"]
    assert lines[4].split() == ["(all)", "3", "0", "0", "0", "0", "0", "0", "0"]


def test_stats__says_so_when_empty() -> None:
    assert run("stats").strip() == "No tasks."


# -- prune ----------------------------------------------------------------------------------


def test_prune__deletes_only_rows_older_than_the_cutoff() -> None:
    now = timezone.now()
    old = [make_completed(finished_at=now - timedelta(days=10)) for _ in range(2)]
    recent = make_completed(finished_at=now - timedelta(days=2))

    out = run("prune", "--older-than", "7")

    assert "Deleted 2 completed tasks finished before" in out
    assert list(CompletedTask.objects.values_list("id", flat=True)) == [recent.pk]
    assert not CompletedTask.objects.filter(pk__in=[r.pk for r in old]).exists()


def test_prune__deletes_in_batches_of_at_most_batch_size() -> None:
    old = timezone.now() - timedelta(days=30)
    for _ in range(5):
        make_completed(finished_at=old)

    with CaptureQueriesContext(connection) as queries:
        out = run("prune", "--older-than", "1", "--batch-size", "2")

    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("DELETE")]
    assert "Deleted 5 completed tasks" in out and "in 3 batch(es)" in out
    assert len(deletes) == 3
    assert not CompletedTask.objects.exists()


def test_prune__a_row_that_cannot_be_deleted_is_skipped_and_the_others_are_pruned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = timezone.now()
    rows = [make_completed(finished_at=now - timedelta(days=10)) for _ in range(5)]
    refused = rows[2].pk

    def refuse_one(sender: Any, instance: CompletedTask, **kwargs: Any) -> None:
        if instance.pk == refused:
            raise IntegrityError("refused by a receiver")

    pre_delete.connect(refuse_one, sender=CompletedTask)
    try:
        deleted, _ = operations.prune(now - timedelta(days=7), [], batch_size=2)
    finally:
        pre_delete.disconnect(refuse_one, sender=CompletedTask)

    assert deleted == 4
    assert list(CompletedTask.objects.values_list("pk", flat=True)) == [refused]
    assert f"event=prune_row_skipped completed_task_id={refused} error=" in caplog.text


def test_prune__only_given_statuses() -> None:
    old = timezone.now() - timedelta(days=30)
    make_completed(CompletedTask.Status.SUCCEEDED, finished_at=old)
    make_completed(CompletedTask.Status.CANCELLED, finished_at=old)
    failed = make_completed(CompletedTask.Status.FAILED, finished_at=old)

    out = run("prune", "--older-than", "1", "--status", "succeeded", "--status", "cancelled")

    assert "Deleted 2 cancelled/succeeded tasks" in out
    assert list(CompletedTask.objects.values_list("id", flat=True)) == [failed.pk]


def test_prune__dry_run_counts_and_deletes_nothing() -> None:
    make_completed(finished_at=timezone.now() - timedelta(days=30))

    out = run("prune", "--older-than", "1.5", "--dry-run")

    assert "Would delete 1 completed tasks" in out
    assert CompletedTask.objects.count() == 1


def test_prune__never_touches_live_tasks() -> None:
    make_task(run_at=timezone.now() - timedelta(days=30))

    run("prune", "--older-than", "0")

    assert Task.objects.count() == 1


@pytest.mark.parametrize("action", ["cancel", "run-now"])
def test_cancel_and_run_now__leave_a_quarantined_task_alone_and_say_so(action: str) -> None:
    task = Task.objects.create(
        task_name="tests.testapp.tasks.record",
        params={"args": ["k"], "kwargs": {}},
        locked_by=QUARANTINED,
        locked_at=timezone.now(),
    )

    out = run(action, str(task.pk))

    task.refresh_from_db()
    assert (task.locked_by, task.cancel_requested_at) == (QUARANTINED, None)
    said = "Skipped (quarantined: no worker runs it; fix the row and release it, or delete it)"
    assert f"{said}: {task.pk}" in out
