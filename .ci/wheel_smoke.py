"""Build the wheel and the sdist, install the wheel in a fresh venv, and use it in a new project.

Run from the repository root: ``python3 .ci/wheel_smoke.py`` (``make smoke`` does). Steps:

1. ``python -m build`` in a throw-away venv makes exactly one wheel and one sdist;
2. the sdist holds what its README and CONTRIBUTING.md point to (docs, tests, benchmarks, ...);
3. the wheel goes into another fresh venv (with its dependencies from the package index), and a
   project made by ``django-admin startproject`` uses it: ``check`` without warnings, ``migrate``,
   a task enqueued from ``manage.py shell``, ``process_tasks --burst`` runs it, and the admin's
   task pages render for a superuser.

The package is imported from the venv, never from this checkout (every command runs elsewhere).
Exits non-zero, saying which step failed, when anything is wrong.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 600
# What the sdist must contain, relative to its top directory.
SDIST_MUST_HAVE = [
    "pyproject.toml",
    "README.md",
    "LICENSE",
    "CHANGELOG.md",
    "CONTRIBUTING.md",
    "Makefile",
    "mkdocs.yml",
    "background_tasks/__init__.py",
    "background_tasks/py.typed",
    "background_tasks/migrations/0001_initial.py",
    "docs/index.md",
    "docs/benchmarks.md",
    "docs_hooks/reference.py",
    "tests/conftest.py",
    "benchmarks/run.py",
    "example_project/manage.py",
    ".ci/run",
]
WHEEL_MUST_HAVE = [
    "background_tasks/__init__.py",
    "background_tasks/py.typed",
    "background_tasks/migrations/0001_initial.py",
]

SETTINGS = """
INSTALLED_APPS += ["background_tasks", "shop"]
DATABASES["default"]["OPTIONS"] = {
    "transaction_mode": "IMMEDIATE",
    "init_command": "PRAGMA journal_mode=WAL;",
}
"""
TASKS = """
from background_tasks import background


@background
def add(a: int, b: int) -> int:
    return a + b
"""
ENQUEUE = "from shop.tasks import add; print(add(2, 3).pk)"
VERIFY = """
from django.contrib.auth.models import User
from django.test import Client
from django.test.utils import setup_test_environment

from background_tasks.models import CompletedTask, Task

setup_test_environment()
done = CompletedTask.objects.get()
assert done.status == "succeeded" and done.result == 5, (done.status, done.result)
assert not Task.objects.exists(), "a task is still queued"
client = Client()
client.force_login(User.objects.create_superuser("admin", "admin@example.com", "pw"))
for url in ("/admin/", "/admin/background_tasks/task/", "/admin/background_tasks/completedtask/",
            f"/admin/background_tasks/completedtask/{done.pk}/change/",
            "/admin/background_tasks/worker/", "/admin/background_tasks/schedule/"):
    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
page = client.get("/admin/background_tasks/completedtask/").content.decode()
assert "shop.tasks.add" in page, "the completed task is not listed"
print("admin pages render")
"""


def step(title: str) -> None:
    print(f"== {title}", flush=True)


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    command = [str(arg) for arg in args]
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        sys.exit(f"FAILED: {' '.join(command)} (exit {result.returncode})\n{output}")
    return output


def new_venv(where: Path) -> Path:
    venv.EnvBuilder(with_pip=True, clear=True).create(where)
    return where / "bin" / "python"


def build(work: Path) -> tuple[Path, Path]:
    step("building the wheel and the sdist")
    python = new_venv(work / "build-venv")
    run(python, "-m", "pip", "install", "--quiet", "build", cwd=work)
    dist = work / "dist"
    run(python, "-m", "build", "--outdir", dist, ROOT, cwd=work)
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        sys.exit(
            f"FAILED: expected one wheel and one sdist, got {[p.name for p in dist.iterdir()]}"
        )
    print(f"   {wheels[0].name}\n   {sdists[0].name}")
    return wheels[0], sdists[0]


def check_contents(wheel: Path, sdist: Path) -> None:
    step("checking what the sdist and the wheel contain")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    missing = [path for path in SDIST_MUST_HAVE if path not in names]
    if missing:
        sys.exit(f"FAILED: the sdist lacks {missing}")
    import zipfile

    with zipfile.ZipFile(wheel) as archive:
        wheel_names = set(archive.namelist())
    missing = [path for path in WHEEL_MUST_HAVE if path not in wheel_names]
    if missing:
        sys.exit(f"FAILED: the wheel lacks {missing}")
    stray = sorted({name.split("/", 1)[0] for name in wheel_names} - {"background_tasks"})
    stray = [name for name in stray if not name.endswith(".dist-info")]
    if stray:
        sys.exit(f"FAILED: the wheel ships more than the package: {stray}")


def smoke(work: Path, wheel: Path) -> None:
    step("installing the wheel into a fresh venv")
    python = new_venv(work / "venv")
    run(python, "-m", "pip", "install", "--quiet", wheel, cwd=work)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "PYTHONPATH", "VIRTUAL_ENV")
    }
    location = run(
        python, "-c", "import background_tasks; print(background_tasks.__file__)", cwd=work, env=env
    ).strip()
    if Path(location).resolve().is_relative_to(ROOT):
        sys.exit(f"FAILED: background_tasks was imported from the checkout ({location})")

    step("using it in a new project: check, migrate, enqueue, process_tasks --burst, admin")
    run(python, "-m", "django", "startproject", "smoke", cwd=work, env=env)
    project = work / "smoke"
    shop = project / "shop"
    run(python, "manage.py", "startapp", "shop", cwd=project, env=env)
    with (project / "smoke" / "settings.py").open("a", encoding="utf-8") as settings:
        settings.write(SETTINGS)
    (shop / "tasks.py").write_text(textwrap.dedent(TASKS).lstrip(), encoding="utf-8")

    output = run(python, "manage.py", "check", cwd=project, env=env)
    if "no issues" not in output:
        sys.exit(f"FAILED: manage.py check reported issues\n{output}")
    run(python, "manage.py", "migrate", "--noinput", cwd=project, env=env)
    run(python, "manage.py", "shell", "-c", ENQUEUE, cwd=project, env=env)
    output = run(python, "manage.py", "process_tasks", "--burst", "--log-std", cwd=project, env=env)
    print(output, end="")
    if "WARNING" in output or "event=task_succeeded" not in output:
        sys.exit("FAILED: the worker warned, or did not log the task's success")
    print(run(python, "manage.py", "background_tasks", "history", cwd=project, env=env), end="")
    print(run(python, "manage.py", "shell", "-c", VERIFY, cwd=project, env=env), end="")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="wheel-smoke-") as tmp:
        work = Path(tmp)
        wheel, sdist = build(work)
        check_contents(wheel, sdist)
        smoke(work, wheel)
    print("wheel smoke test passed")


if __name__ == "__main__":
    main()
