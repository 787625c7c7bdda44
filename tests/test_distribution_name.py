"""Every documented install command names the distribution pyproject.toml builds."""

from __future__ import annotations

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
# `pip install NAME`, `pip install "NAME[extra]"`; not paths, wheels or options.
INSTALL = re.compile(
    r"pip install\s+[\"']?([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?[\"']?(?=[\s`]|$)",
    re.MULTILINE,
)
# Other distributions the docs tell readers to install or remove.
OTHERS = {"pytest-django", "django-background-tasks"}


def distribution_name() -> str:
    text = (REPO_ROOT / "pyproject.toml").read_text()
    match = re.search(r'^\[project\]\s*\nname = "([^"]+)"', text, re.MULTILINE)
    assert match, "pyproject.toml has no [project] name"
    return match.group(1)


def installed_names(path: Path) -> set[str]:
    return {m.group(1) for m in INSTALL.finditer(path.read_text())}


def test_the_distribution_is_not_the_unrelated_background_tasks_on_pypi() -> None:
    assert distribution_name() not in ("background-tasks", "background_tasks")


def test_readme_quickstart_installs_the_distribution_of_pyproject() -> None:
    assert f"pip install {distribution_name()}\n" in (REPO_ROOT / "README.md").read_text()


def test_every_documented_pip_install_names_the_distribution_or_another_known_package() -> None:
    name = distribution_name()
    wrong = {
        f"{path.relative_to(REPO_ROOT)}: pip install {found}"
        for path in DOCUMENTS
        for found in installed_names(path) - {name} - OTHERS
    }

    assert not wrong
    assert name in installed_names(REPO_ROOT / "docs" / "installation.md")
