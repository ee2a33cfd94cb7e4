from django.apps import apps
from django.contrib import admin
from django.urls import include, path

from messaging import metrics_endpoint

urlpatterns = [
    path("admin/", admin.site.urls),
    # Prometheus' default path; behind a bearer token (BUS_METRICS_TOKEN).
    path("metrics", metrics_endpoint.metrics, name="metrics"),
]

if apps.is_installed("console"):
    from console import pages

    urlpatterns = [
        # No public site: "/" (the admin's "View site" too) leads into the admin.
        path("", pages.home, name="home"),
        # The console's own admin pages, before the admin's catch-all.
        path("admin/messaging/", include(pages)),
        *urlpatterns,
    ]
