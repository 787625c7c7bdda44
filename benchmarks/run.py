"""Benchmarks of background_tasks against a real database; see docs/benchmarks.md.

    make bench                                    # SQLite
    make bench BENCH_ARGS="--db postgres"
    make bench BENCH_ARGS="--db all"
    make bench BENCH_ARGS="--quick"               # a few seconds: does the benchmark still run?
    python benchmarks/run.py --db mysql --phases claims,drain

Every figure printed is measured on this machine, at this run; nothing is estimated.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
VENDORS = ("sqlite", "postgres", "mysql")
PHASES = ("ceiling", "enqueue", "drain", "latency", "claims", "memory", "dashboard")
#: Phases run when --phases is not given: the dashboard's million-row load is asked for.
DEFAULT_PHASES = ("ceiling", "enqueue", "drain", "latency", "claims", "memory")
#: Phases of --quick when --phases is not given: a few seconds, so CI can run it every time.
QUICK_PHASES = ("ceiling", "enqueue", "drain", "latency", "claims")
DEFAULT_URLS = {
    "sqlite": "sqlite:///.test-dbs/bench.sqlite3",
    "postgres": "postgres://postgres@127.0.0.1:5432/bench",
    "mysql": "mysql://root@127.0.0.1:3306/bench",
}
# (full, --quick)
SIZES = {
    "tasks": (2_000, 200),
    "bulk_tasks": (10_000, 500),
    "claim_rows": (200_000, 2_000),
    "memory_tasks": (100_000, 2_000),
    "dashboard_rows": (1_000_000, 5_000),
}


def positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    return 0 if text.strip() == "0" else positive_int(text)


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def non_negative_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def conn_max_age(text: str) -> str:
    text = text.strip().lower()
    if text != "none" and not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a number of seconds or 'none', got {text!r}")
    return text


def phase_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(PHASES))
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"phases are {', '.join(PHASES)}; got {text!r}")
    return [name for name in PHASES if name in names]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/run.py", description="Measure background_tasks against a real database."
    )
    parser.add_argument("--db", choices=[*VENDORS, "all"], default="sqlite", help="default: sqlite")
    parser.add_argument(
        "--tasks",
        type=positive_int,
        default=None,
        help=f"tasks to enqueue and to drain (default {SIZES['tasks'][0]:,}; "
        f"--quick {SIZES['tasks'][1]:,})",
    )
    parser.add_argument(
        "--bulk-tasks",
        type=positive_int,
        default=None,
        help=f"calls of the bulk enqueue, in one call (default {SIZES['bulk_tasks'][0]:,}; "
        f"--quick {SIZES['bulk_tasks'][1]:,})",
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=4,
        help="worker processes of drain run (b) (default 4)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes and the phases "
        f"{','.join(QUICK_PHASES)}: a few seconds, to check the benchmark still runs",
    )
    parser.add_argument(
        "--phases",
        type=phase_list,
        default=None,
        help=f"comma-separated subset of {','.join(PHASES)} (default: {','.join(DEFAULT_PHASES)})",
    )
    parser.add_argument(
        "--latency-tasks",
        type=positive_int,
        default=None,
        help="tasks of the latency phase, enqueued one at a time (default 200 where NOTIFY wakes "
        "the worker, 12 where it polls; --quick 10 and 4)",
    )
    parser.add_argument(
        "--latency-poll",
        type=positive_seconds,
        default=None,
        metavar="SECONDS",
        help="--sleep of the latency phase's worker (default: POLL_INTERVAL, 5 s; "
        "--quick 0.2 s where the worker polls)",
    )
    parser.add_argument(
        "--claim-rows",
        type=positive_int,
        default=None,
        help="extra rows (history, scheduled, backlog) of each claim scenario "
        f"(default {SIZES['claim_rows'][0]:,}; --quick {SIZES['claim_rows'][1]:,})",
    )
    for kind, what in (
        ("history", "CompletedTask rows of scenario (i)"),
        ("scheduled", "far-future Task rows of scenarios (ii), (ii-b) and (ii-c)"),
        ("backlog", "more ready Task rows of scenario (iii)"),
    ):
        parser.add_argument(
            f"--claim-{kind}-rows",
            type=positive_int,
            default=None,
            help=f"{what} (default: --claim-rows)",
        )
    parser.add_argument(
        "--claim-rounds",
        type=positive_int,
        default=200,
        help="timed claims per query (default 200)",
    )
    parser.add_argument(
        "--memory-tasks",
        type=positive_int,
        default=None,
        help=f"tasks of the memory run (default {SIZES['memory_tasks'][0]:,}; "
        f"--quick {SIZES['memory_tasks'][1]:,})",
    )
    parser.add_argument(
        "--memory-concurrency", type=positive_int, default=1, help="threads of that worker"
    )
    parser.add_argument(
        "--conn-max-age",
        type=conn_max_age,
        default=None,
        metavar="SECONDS|none",
        help="CONN_MAX_AGE of the worker processes (default: Django's default, 0)",
    )
    parser.add_argument(
        "--memory-conn-max-age",
        type=conn_max_age,
        default="none",
        metavar="SECONDS|none",
        help="CONN_MAX_AGE of the memory run's worker (default: none, persistent connections)",
    )
    parser.add_argument(
        "--memory-backlog",
        type=non_negative_int,
        default=5_000,
        metavar="N",
        help="keep at most N ready rows queued during the memory run, topping up as the worker "
        "drains them (default 5,000; 0: insert every row first and run the worker with --burst)",
    )
    parser.add_argument(
        "--memory-durable",
        action="store_true",
        help="PostgreSQL: keep synchronous_commit on in the memory run (default: off there)",
    )
    parser.add_argument(
        "--memory-vacuum",
        type=non_negative_seconds,
        default=10.0,
        metavar="SECONDS",
        help="PostgreSQL: VACUUM the queue table every SECONDS during the memory run, as "
        "autovacuum would on a busy table (default 10; 0: never)",
    )
    parser.add_argument(
        "--dashboard-rows",
        type=positive_int,
        default=None,
        help="history rows of the dashboard phase "
        f"(default {SIZES['dashboard_rows'][0]:,}; --quick {SIZES['dashboard_rows'][1]:,})",
    )
    parser.add_argument(
        "--dashboard-rounds", type=positive_int, default=20, help="timed page loads (default 20)"
    )
    parser.add_argument(
        "--plans", action="store_true", help="print every claim plan, not just some"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the raw results to PATH")
    for vendor in VENDORS:
        parser.add_argument(
            f"--{vendor}-url",
            default=os.environ.get(f"BENCH_{vendor.upper()}_URL", DEFAULT_URLS[vendor]),
            help=f"database of --db {vendor} "
            f"(default: $BENCH_{vendor.upper()}_URL or {DEFAULT_URLS[vendor]})",
        )
    args = parser.parse_args(argv)
    if args.phases is None:
        args.phases = list(QUICK_PHASES if args.quick else DEFAULT_PHASES)
    for name, (full, quick) in SIZES.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    for kind in ("history", "scheduled", "backlog"):
        if getattr(args, f"claim_{kind}_rows") is None:
            setattr(args, f"claim_{kind}_rows", args.claim_rows)
    return args


def run_each_database(argv: Sequence[str], args: argparse.Namespace) -> int:
    """Run every vendor in its own process: Django's settings are configured once per process."""
    rest = list(argv)
    for i, arg in enumerate(rest):
        if arg == "--db":
            del rest[i : i + 2]
            break
        if arg.startswith("--db="):
            del rest[i]
            break
    code = 0
    for vendor in VENDORS:
        extra = []
        if args.json:
            path = Path(args.json)
            extra = ["--json", str(path.with_name(f"{path.stem}-{vendor}{path.suffix}"))]
        command = [sys.executable, str(Path(__file__).resolve()), *rest, *extra, "--db", vendor]
        code = subprocess.call(command) or code
        print(flush=True)
    return code


def missing_driver(vendor: str) -> str | None:
    """Say how to install the database driver of ``vendor`` if it is missing."""
    modules = {"postgres": ("psycopg", "psycopg2"), "mysql": ("MySQLdb",)}.get(vendor, ())
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            continue
        return None
    if not modules:
        return None
    url = DEFAULT_URLS[vendor]
    return (
        f"--db {vendor} needs the {vendor} driver ({' or '.join(modules)}): run "
        f"`make venv DATABASE_URL={url}` (or pip install -e '.[{vendor}]') first."
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.db == "all":
        try:
            return run_each_database(argv, args)
        except KeyboardInterrupt:
            return 130
    problem = missing_driver(args.db)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    os.environ["BENCH_DATABASE_URL"] = getattr(args, f"{args.db}_url")
    if args.conn_max_age is not None:
        os.environ["BENCH_CONN_MAX_AGE"] = args.conn_max_age
    os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.settings"
    # Run as a script, sys.path[0] is benchmarks/; the package lives one level up.
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    script_dir = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if p != script_dir]

    import django

    django.setup()
    from benchmarks import suite

    try:
        return suite.run(args)
    except KeyboardInterrupt:
        print("\ninterrupted: worker processes stopped, bench tables emptied", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
