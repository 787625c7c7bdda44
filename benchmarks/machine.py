"""What the figures were measured on: hardware, software versions and the code's revision."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import django

import background_tasks

from .workers import load_average

REPO_ROOT = Path(__file__).resolve().parent.parent


def _proc_field(path: str, key: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                name, sep, value = line.partition(":")
                if sep and name.strip() == key:
                    return value.strip()
    except OSError:
        return None
    return None


def _cpu() -> str:
    model = _proc_field("/proc/cpuinfo", "model name") or platform.processor() or "unknown"
    logical = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else logical
    return f"{model}, {logical} logical cores ({usable} usable by this process)"


def _memory() -> str:
    total = _proc_field("/proc/meminfo", "MemTotal")
    if not total:
        return "unknown"
    return f"{int(total.split()[0]) / 1024 / 1024:.1f} GiB"


def _revision() -> str:
    def git(*args: str) -> str:
        result = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=10
        )
        return result.stdout.strip() if result.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown (not a git checkout)"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "background_tasks")
    return f"{commit}{' + uncommitted changes in background_tasks/' if dirty else ''}"


def describe() -> list[tuple[str, str]]:
    """Return (label, value) pairs describing this machine and this checkout."""
    return [
        ("Date", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        ("CPU", _cpu()),
        ("Memory", _memory()),
        ("OS", f"{platform.system()} {platform.release()} ({platform.machine()})"),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("Django", django.get_version()),
        ("background_tasks", f"{background_tasks.__version__} at {_revision()}"),
        (
            "Load average",
            f"{load_average()} (1/5/15 min, at start; other processes share the machine)",
        ),
    ]
