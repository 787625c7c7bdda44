"""A tiny shop: orders, and a log of the calls made to the (simulated) supplier API."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class Order(models.Model):
    customer = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="orders",
    )
    email = models.EmailField()
    product = models.CharField(max_length=100)
    quantity = models.PositiveIntegerField(default=1)
    amount = models.DecimalField(max_digits=10, decimal_places=2)
    placed_at = models.DateTimeField(default=timezone.now, db_index=True)
    # Filled in by background tasks.
    confirmation_sent_at = models.DateTimeField(null=True, blank=True)
    reservation_code = models.CharField(max_length=32, blank=True, default="")

    class Meta:
        ordering = ["-placed_at", "-id"]

    def __str__(self) -> str:
        return f"Order #{self.pk}: {self.quantity} x {self.product}"


class SupplierRequest(models.Model):
    """One call to the supplier's stock API, kept so that retries can be seen (and simulated)."""

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="supplier_requests")
    made_at = models.DateTimeField(default=timezone.now)
    succeeded = models.BooleanField(default=False)
    error = models.CharField(max_length=255, blank=True, default="")

    class Meta:
        ordering = ["made_at", "id"]

    def __str__(self) -> str:
        return f"Supplier request for order #{self.order_id} at {self.made_at:%H:%M:%S}"
