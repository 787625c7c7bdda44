"""A stand-in for a supplier's stock API that times out on the first request for each order.

Real APIs fail now and then; this one fails predictably so that the demo shows a retry. Each
request is a row in the database, not a counter in memory, so the worker that retries (maybe
another process, on another host) sees the earlier attempt.
"""

from __future__ import annotations

import secrets

from .models import Order, SupplierRequest


class SupplierUnavailable(ConnectionError):
    """The supplier API did not answer."""


def reserve(order: Order) -> str:
    """Reserve stock for ``order`` and return the supplier's reservation code."""
    if not order.supplier_requests.exists():
        error = "supplier API timed out after 10 s (simulated; the next request will succeed)"
        SupplierRequest.objects.create(order=order, succeeded=False, error=error)
        raise SupplierUnavailable(error)
    SupplierRequest.objects.create(order=order, succeeded=True)
    return f"R-{order.pk}-{secrets.token_hex(3).upper()}"
