"""A worker keeps its database connections from task to task, whatever ``CONN_MAX_AGE`` says.

Django closes a connection at the end of each request when ``CONN_MAX_AGE`` is 0 (its
default). A worker has no requests: closing after every task made each task pay a new
connection (a TCP and authentication round trip, more than the task's own bookkeeping), so a
worker treats ``CONN_MAX_AGE = 0`` as "no age limit". A positive ``CONN_MAX_AGE`` still
retires a connection once it is that old, and a connection is replaced, never reused, when:

- an error since the last commit left it unusable (the same health check Django runs);
- a task left autocommit off (``transaction.set_autocommit(False)`` without restoring it):
  whatever transaction it left open is dropped with it.

A task body therefore starts with a connection that works and holds no transaction.
"""

from __future__ import annotations

from django.db import connections


def refresh_connections() -> None:
    """Replace this thread's broken or obsolete connections; keep the others open."""
    for conn in connections.all(initialized_only=True):
        if conn.connection is None or conn.in_atomic_block:
            # Unopened; or inside a caller's transaction (a Worker run embedded): leave it.
            continue
        if conn.settings_dict.get("CONN_MAX_AGE") == 0:
            conn.close_at = None  # Django's "close after each request": a worker has none
        conn.close_if_unusable_or_obsolete()


__all__ = ["refresh_connections"]
