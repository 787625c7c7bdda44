"""The migrations check: asked until the answer is yes, then never again in the process."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from background_tasks import schema
from background_tasks.exceptions import NotMigrated

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_answers() -> Iterator[None]:
    schema.forget()
    yield
    schema.forget()


def test_missing_schema__the_migrated_test_database_lacks_nothing() -> None:
    assert schema.missing_schema("default") is None


def test_require_migrated__once_the_answer_is_yes_it_is_not_asked_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[str] = []
    monkeypatch.setattr(schema, "missing_schema", lambda using: asked.append(using))

    schema.require_migrated("default")
    schema.require_migrated("default")

    assert asked == ["default"]


def test_require_migrated__a_no_is_not_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter(["unapplied migrations: background_tasks.0001_initial", None])
    monkeypatch.setattr(schema, "missing_schema", lambda using: next(answers))

    with pytest.raises(NotMigrated, match=re.escape("run `python manage.py migrate` first")):
        schema.require_migrated("default")
    schema.require_migrated("default")  # migrated meanwhile: no error


def test_missing_schema__with_migrations_disabled_looks_for_the_tables(settings: object) -> None:
    settings.MIGRATION_MODULES = {"background_tasks": None}  # type: ignore[attr-defined]

    assert schema.missing_schema("default") is None
