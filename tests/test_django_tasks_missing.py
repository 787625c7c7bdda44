"""Without django.tasks or the backport, the backend says what to install."""

from __future__ import annotations

import importlib

import pytest
from django.core.exceptions import ImproperlyConfigured

from tests import tasks_framework

if tasks_framework.AVAILABLE:
    pytest.skip("a tasks framework is installed", allow_module_level=True)


def test_backends_import__without_a_tasks_framework__names_this_distribution_s_extra() -> None:
    with pytest.raises(ImproperlyConfigured) as error:
        importlib.import_module("background_tasks.backends")

    assert "pip install 'django-background-tasks-db[django-tasks]'" in str(error.value)
