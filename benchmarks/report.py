"""Plain-text tables of the measured figures."""

from __future__ import annotations

from collections.abc import Sequence

from .ceiling import Ceiling
from .claim_cost import ClaimResult
from .dashboard import DashboardResult
from .memory import FLAT_GROWTH, MemoryResult
from .throughput import DrainResult, EnqueueResult, StartupResult


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Render rows under headers; numbers right-aligned, text left-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [all(_is_number(row[i]) for row in rows) and bool(rows) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(row, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def heading(title: str) -> str:
    return f"\n== {title}\n"


def kib(value: int) -> str:
    return f"{value / 1024:.1f} MiB"


def ratio(rate: float, top: float | None) -> str:
    """Show ``rate`` as a percentage of the ceiling ``top`` ("-" when not measured)."""
    return "-" if not top else f"{rate / top:.0%}"


def ceiling(result: Ceiling) -> str:
    rows = [(r.label, r.rows, round(r.seconds, 3), round(r.rate)) for r in result.results]
    return (
        table(["loop", "rows", "seconds", "rows/s"], rows)
        + "\n\nThe figures below are also shown as ratios to these, measured in this run: "
        "on a loaded machine the ratios mean more than the absolute figures."
    )


def enqueue(results: Sequence[EnqueueResult], top: Ceiling | None = None) -> str:
    insert = top.insert_one.rate if top else None
    insert_batch = top.insert_batch.rate if top else None
    # A call is compared with the bare ORM insert of the same row, in the same transaction mode.
    orm = {r.one_transaction: r.rate for r in results if r.kind == "orm"}
    rows = [
        (
            r.mode,
            r.tasks,
            round(r.seconds, 2),
            round(r.rate),
            round(r.micros_per_task),
            ratio(r.rate, insert),
            ratio(r.rate, insert_batch),
            ratio(r.rate, orm.get(r.one_transaction)) if r.kind == "call" else "-",
        )
        for r in results
    ]
    headers = [
        "mode",
        "tasks",
        "seconds",
        "tasks/s",
        "us/task",
        "of INSERT ceiling",
        "of bulk INSERT ceiling",
        "of ORM create()",
    ]
    return table(headers, rows)


def drain(
    startup: StartupResult, results: Sequence[DrainResult], top: Ceiling | None = None
) -> str:
    rows = [
        (
            r.label,
            r.processes,
            r.concurrency,
            r.batch,
            r.conn_max_age,
            r.tasks,
            round(r.wall_seconds, 2),
            round(r.wall_rate),
            round(r.busy_seconds, 2),
            round(r.busy_rate),
            round(r.cpu_millis_per_task, 2),
            "/".join(map(str, r.per_worker)),
            # Busy rates: the ceiling loops have no process start-up either.
            ratio(r.busy_rate, top.drain_one.rate if top else None),
            ratio(r.busy_rate, top.drain_batch.rate if top else None),
        )
        for r in results
    ]
    headers = [
        "run",
        "processes",
        "threads each",
        "--batch",
        "CONN_MAX_AGE",
        "tasks",
        "wall s",
        "tasks/s (wall)",
        "busy s",
        "tasks/s (busy)",
        "worker CPU ms/task",
        "tasks per worker",
        "busy of 1-row ceiling",
        "busy of 100-row ceiling",
    ]
    return (
        f"start-up + shutdown of one worker on an empty queue: {startup.wall_seconds:.2f} s wall, "
        f"{startup.cpu_seconds:.2f} s CPU\n\n" + table(headers, rows) + _scaling(results)
    )


def _scaling(results: Sequence[DrainResult]) -> str:
    """Busy rates of the other runs as multiples of run (a): 1 process, 1 thread."""
    one = next((r for r in results if r.label == "(a)"), None)
    if one is None:
        return ""
    lines = [
        f"{r.label} {r.processes} process(es) x {r.concurrency} thread(s)"
        f", --batch {r.batch}: "
        f"{r.busy_rate / one.busy_rate:.2f}x {one.label}"
        for r in results
        if r is not one and r.conn_max_age == one.conn_max_age
    ]
    return "\n\nbusy rate as a multiple of 1 process x 1 thread:\n" + "\n".join(lines)


def claims(results: Sequence[ClaimResult]) -> str:
    rows = [
        (
            r.scenario,
            r.variant,
            r.plan.index or "NONE",
            "yes" if r.plan.sorts else "no",
            "-" if r.plan.work is None else f"{r.plan.work} {r.plan.work_unit}",
            f"{r.fastest:.3f}",
            f"{r.median:.3f}",
            f"{r.p95:.3f}",
            f"{r.total_seconds:.3f}",
            f"{r.fill_seconds:.1f}",
            "FLAG: " + "; ".join(r.flags) if r.flags else "ok",
        )
        for r in results
    ]
    headers = [
        "scenario",
        "queues",
        "index used",
        "sort",
        "plan work",
        "claim min ms",
        "claim median ms",
        "claim p95 ms",
        "claims+releases s",
        "fill s",
        "verdict",
    ]
    return table(headers, rows)


def plans(results: Sequence[ClaimResult], everything: bool) -> str:
    chunks = []
    for r in results:
        if everything or r.flags or r.variant == results[0].variant:
            body = "\n".join("    " + line for line in r.plan.text.splitlines())
            chunks.append(f"-- {r.scenario} / {r.variant}\n{body}")
    return "\n\n".join(chunks)


def memory(result: MemoryResult) -> str:
    checkpoints = result.checkpoints()
    rows = [(f"{s.done:,}", round(s.seconds, 1), kib(s.rss_kib)) for s in checkpoints]
    lines = [table(["tasks done", "seconds", "RSS"], rows), ""]
    first, last = result.at(result.tasks // 10), result.end
    verdict = "FLAT" if result.flat else "FLAG: GROWS"
    lines += [
        f"RSS after {first.done:,} tasks: {kib(first.rss_kib)}; at the end ({last.done:,} tasks): "
        f"{kib(last.rss_kib)}; growth {result.growth:+.1%} ({verdict}, limit {FLAT_GROWTH:.0%})",
        f"max sampled RSS {kib(max(s.rss_kib for s in result.samples))}; peak VmHWM "
        f"{kib(result.peak_kib)}; {len(result.samples)} samples",
        f"{result.tasks:,} tasks in {result.wall_seconds:.1f} s wall "
        f"({result.tasks / result.wall_seconds:.0f} tasks/s incl. start-up); "
        f"first tenth {result.first_tenth_rate:.0f} tasks/s, "
        f"last tenth {result.last_tenth_rate:.0f} tasks/s",
        f"worker: --concurrency {result.concurrency}, {result.worker_settings}",
    ]
    vacuum = result.vacuum
    if vacuum is not None:
        took = (
            f"each took {min(vacuum.seconds):.2f} to {max(vacuum.seconds):.2f} s"
            if vacuum.seconds
            else "none was due"
        )
        lines.append(
            f"queue table: VACUUM by the benchmark every {vacuum.interval:g} s, as autovacuum "
            f"would on a busy table (this server: autovacuum={vacuum.autovacuum}); "
            f"{len(vacuum.seconds)} VACUUMs, {took}"
        )
    return "\n".join(lines)


def dashboard(results: Sequence[DashboardResult]) -> str:
    rows = [
        (
            r.label,
            r.rows,
            round(r.insert_seconds),
            round(r.cold_ms, 1),
            r.cold_queries,
            r.hours_counted,
            round(r.fill_ms, 1),
            r.rounds,
            round(r.median_ms, 1),
            round(r.p95_ms, 1),
            round(r.max_ms, 1),
            r.queries,
        )
        for r in results
    ]
    headers = ["history span", "rows", "fill s", "cold ms", "cold queries", "hours counted"]
    headers += ["counting ms", "loads", "median ms", "p95 ms", "max ms", "queries"]
    parts = [
        table(headers, rows),
        "cold: the first load, which counts the closed hours of the day (counting ms: its hour"
        " counts and insert); then the warm loads.",
    ]
    for r in results:
        parts.append(f"\nqueries of one warm page load ({r.label}):")
        parts.append(table(["query", "ms"], [(n, round(ms, 2)) for n, ms in r.query_ms]))
        parts.append("plans of the history queries:")
        parts.extend(f"  {name}: {plan}" for name, plan in r.plans)
        parts.append(
            f"a worker's pruning pass counting {r.pass_hours} missing hours: {r.pass_ms:.1f} ms"
        )
    return "\n".join(parts)
