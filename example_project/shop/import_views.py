"""A CSV import run as a background task, and a page that polls its progress.

``import_page`` enqueues ``import_orders`` and shows a progress bar; a few lines of JavaScript
poll ``import_progress``, a small JSON view around ``background_tasks.progress(task_id)``.
"""

from __future__ import annotations

from django import forms
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from background_tasks import progress

from .tasks import import_orders

#: Session key of the ids of the imports this user started: only those can be polled.
SESSION_KEY = "shop_imports"
EXAMPLE_CSV = "email,product,quantity,amount\n" + "".join(
    f"buyer{i}@example.com,Widget {i},{i % 5 + 1},{i}.50\n" for i in range(1, 21)
)


class ImportForm(forms.Form):
    csv = forms.CharField(
        label="Orders as CSV (email,product,quantity,amount)",
        widget=forms.Textarea(attrs={"rows": 10, "cols": 70}),
        initial=EXAMPLE_CSV,
        max_length=100_000,  # an argument is stored in the task row: keep it small
    )


@login_required
@require_http_methods(["GET", "POST"])
def import_page(request: HttpRequest, task_id: int | None = None) -> HttpResponse:
    form = ImportForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        task = import_orders(form.cleaned_data["csv"], customer_id=request.user.pk)
        request.session[SESSION_KEY] = [*request.session.get(SESSION_KEY, []), task.pk][-20:]
        return redirect("shop:import_task", task_id=task.pk)
    if task_id is not None and task_id not in request.session.get(SESSION_KEY, []):
        raise Http404("No import of yours has this id.")
    return render(request, "shop/import.html", {"form": form, "task_id": task_id})


@login_required
@require_GET
def import_progress(request: HttpRequest, task_id: int) -> JsonResponse:
    """Return the import's progress as JSON: done, total, fraction, message, status."""
    found = progress(task_id) if task_id in request.session.get(SESSION_KEY, []) else None
    if found is None:
        raise Http404("No import of yours has this id.")
    return JsonResponse(found.as_dict())
