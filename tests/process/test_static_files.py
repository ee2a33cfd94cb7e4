"""The admin is styled under gunicorn: production settings (DEBUG off) serve the collected
static files from the WSGI app itself (WhiteNoise), as the Docker image collects them at build."""

import json
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.process

#: Run under the production settings: collect, then ask config.wsgi.application (what gunicorn serves).
THROUGH_THE_WSGI_APP = textwrap.dedent("""
    import json, re
    from wsgiref.util import setup_testing_defaults
    from django.conf import settings
    from django.core.management import call_command

    call_command("collectstatic", "--noinput", verbosity=0)  # the Dockerfile's build step
    from config.wsgi import application

    def get(path):
        environ = {"PATH_INFO": path, "HTTP_HOST": "localhost"}
        setup_testing_defaults(environ)
        answer = {}
        def start_response(status, headers, exc_info=None):
            answer.update(status=int(status.split()[0]), headers=dict(headers))
        answer["body"] = b"".join(application(environ, start_response)).decode("utf-8", "replace")
        return answer

    login = get("/admin/login/")
    stylesheet = re.search(r'<link rel="stylesheet" href="([^"]+base[^"]*\\.css)"', login["body"]).group(1)
    css = get(stylesheet)
    print(json.dumps({
        "debug": settings.DEBUG,
        "login": login["status"],
        "stylesheet": stylesheet,
        "css": css["status"],
        "css_type": css["headers"].get("Content-Type"),
        "css_cache": css["headers"].get("Cache-Control"),
        "css_is_the_admins": "--body-bg" in css["body"],
        "plain_name": get("/static/admin/css/base.css")["status"],
    }))
""")


def test_the_admin_stylesheet_is_served_by_the_wsgi_app_with_debug_off(tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "localhost",
        "DJANGO_SECURE_SSL_REDIRECT": "false",  # as docker-compose runs it, on plain HTTP
        "DATABASE_URL": f"sqlite:///{tmp_path / 'unused.sqlite3'}",
        "CELERY_BROKER_URL": "amqp://shop:secret@mq.internal:5672/shop",
        "DJANGO_STATIC_ROOT": str(tmp_path / "static"),
    }

    result = subprocess.run([sys.executable, "manage.py", "shell", "-c", THROUGH_THE_WSGI_APP], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr
    served = json.loads(result.stdout.strip().splitlines()[-1])
    assert served["debug"] is False and served["login"] == 200
    assert served["stylesheet"].startswith("/static/admin/css/base.")  # a hashed name: cached for good
    assert (served["css"], served["css_type"], served["css_is_the_admins"]) == (200, "text/css; charset=\"utf-8\"", True)
    assert "immutable" in served["css_cache"]
    assert served["plain_name"] == 200
    assert (tmp_path / "static" / "admin" / "css" / "base.css").exists()
