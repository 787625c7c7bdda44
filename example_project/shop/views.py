"""Placing an order enqueues its follow-up work instead of doing it in the request."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from background_tasks.models import CompletedTask, Task

from .models import Order
from .tasks import reserve_stock, send_order_confirmation


class OrderForm(forms.ModelForm):  # type: ignore[type-arg]
    class Meta:
        model = Order
        fields = ["email", "product", "quantity", "amount"]


@login_required
@require_http_methods(["GET", "POST"])
def orders(request: HttpRequest) -> HttpResponse:
    user = request.user
    assert user.is_authenticated  # login_required; tells type checkers too
    form = OrderForm(request.POST or None, initial={"email": user.email})
    if request.method == "POST" and form.is_valid():
        # The tasks are rows inserted in this transaction: should anything here fail, neither
        # the order nor its tasks exist, and no worker sees the tasks before the commit.
        with transaction.atomic():
            order = form.save(commit=False)
            order.customer = user
            order.save()
            # creator= records who asked for the task; the admin shows it.
            send_order_confirmation(order.pk, creator=user)
            reserve_stock(order.pk, creator=user, verbose_name=f"Reserve stock for {order}")
        messages.success(request, f"{order} placed; confirmation and stock reservation queued.")
        return redirect("shop:orders")

    mine = {
        "creator_content_type": ContentType.objects.get_for_model(user),
        "creator_object_id": str(user.pk),
    }
    context = {
        "form": form,
        "orders": Order.objects.filter(customer=user)[:20],
        "pending_tasks": Task.objects.filter(**mine)[:20],
        "finished_tasks": CompletedTask.objects.filter(**mine)[:20],
    }
    return render(request, "shop/orders.html", context)
