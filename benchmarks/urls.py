"""URLs of the benchmarks: the admin only (the dashboard phase loads its pages).

Not tests.urls: that imports the test app, which the benchmark settings do not install.
"""

from django.contrib import admin
from django.urls import path

urlpatterns = [path("admin/", admin.site.urls)]
