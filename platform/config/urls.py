from django.apps import apps
from django.contrib import admin
from django.urls import include, path

urlpatterns = [path("admin/", admin.site.urls)]

if apps.is_installed("console"):
    from console import pages

    urlpatterns = [
        # No public site: "/" (the admin's "View site" too) leads into the admin.
        path("", pages.home, name="home"),
        # The console's own admin pages, before the admin's catch-all.
        path("admin/messaging/", include(pages)),
        *urlpatterns,
    ]
