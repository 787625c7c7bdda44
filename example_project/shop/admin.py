from __future__ import annotations

from django.contrib import admin

from .models import Order, SupplierRequest


class SupplierRequestInline(admin.TabularInline):  # type: ignore[type-arg]
    model = SupplierRequest
    extra = 0
    readonly_fields = ["made_at", "succeeded", "error"]
    can_delete = False


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = [
        "id",
        "product",
        "quantity",
        "amount",
        "email",
        "placed_at",
        "confirmation_sent_at",
        "reservation_code",
    ]
    list_filter = ["placed_at"]
    search_fields = ["email", "product", "reservation_code"]
    inlines = [SupplierRequestInline]
