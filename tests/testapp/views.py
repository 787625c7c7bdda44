"""An async view, as a project would write one, enqueueing and looking up @background tasks."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from .tasks import async_record, send_newsletter


async def enqueue_newsletter(request: HttpRequest, user_id: int) -> JsonResponse:
    task = await send_newsletter.aenqueue(user_id, template="async", verbose_name="from a view")
    found = await send_newsletter.afind(task.pk)
    return JsonResponse({"id": task.pk, "found": found is not None and found.pk == task.pk})


async def enqueue_async_record(request: HttpRequest, key: str) -> JsonResponse:
    task = await async_record.aenqueue(key)
    return JsonResponse({"id": task.pk})
