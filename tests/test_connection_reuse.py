"""A worker keeps its connection from task to task; broken or obsolete ones are replaced."""

from __future__ import annotations

import time

import pytest
from django.db import connection, transaction

from background_tasks.connection_reuse import refresh_connections

pytestmark = pytest.mark.django_db(transaction=True)


def opened() -> object:
    connection.ensure_connection()
    return connection.connection


def test_refresh__keeps_a_healthy_connection_at_conn_max_age_0(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)
    raw = opened()
    connection.close_at = time.monotonic()  # what Django sets for CONN_MAX_AGE = 0

    refresh_connections()

    assert connection.connection is raw


def test_refresh__replaces_a_connection_older_than_a_positive_conn_max_age(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 60)
    opened()
    connection.close_at = time.monotonic() - 1

    refresh_connections()

    assert connection.connection is None


def test_refresh__replaces_a_connection_a_task_left_in_manual_commit() -> None:
    opened()
    transaction.set_autocommit(False)

    refresh_connections()

    assert connection.connection is None
    assert connection.get_autocommit()  # the next one starts in autocommit


def test_refresh__replaces_a_connection_that_no_longer_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opened()
    connection.errors_occurred = True
    monkeypatch.setattr(connection, "is_usable", lambda: False)

    refresh_connections()

    assert connection.connection is None


def test_refresh__leaves_a_connection_inside_a_callers_transaction_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 60)
    with transaction.atomic():
        raw = opened()
        connection.close_at = time.monotonic() - 1

        refresh_connections()

        assert connection.connection is raw
