from django.contrib import admin
from django.urls import path

from tests.testapp import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("async/newsletter/<int:user_id>/", views.enqueue_newsletter),
    path("async/record/<str:key>/", views.enqueue_async_record),
]
