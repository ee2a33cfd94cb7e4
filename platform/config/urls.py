from django.contrib import admin
from django.urls import include, path

from messaging import admin_pages

urlpatterns = [
    # No public site: "/" (the admin's "View site" too) leads into the admin.
    path("", admin_pages.home, name="home"),
    # The bus's own admin pages, before the admin's catch-all.
    path("admin/messaging/", include(admin_pages)),
    path("admin/", admin.site.urls),
]
