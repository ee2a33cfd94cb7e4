"""Run the whole platform in one terminal: every context worker, the relay,
the web admin and Flower, as separate processes supervised together.

On the embedded default (filesystem broker, SQLite) it says so: that mode is
for trying the platform; the reliability promises hold on RabbitMQ and
PostgreSQL.
"""

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from messaging.registry import registry

#: The admin login created on the first run.
ADMIN_USERNAME = "admin"
#: Seconds a process gets to finish its current work after SIGTERM.
STOP_GRACE_SECONDS = 15


class Command(BaseCommand):
    help = "Run every context worker, the relay, the web admin and Flower together."

    def add_arguments(self, parser):
        parser.add_argument("--web-port", type=int, default=8000)
        parser.add_argument("--flower-port", type=int, default=5555)
        parser.add_argument("--no-web", action="store_true", help="do not start the web admin")
        parser.add_argument("--no-flower", action="store_true", help="do not start Flower")

    def handle(self, *args, **options):
        self._announce_mode()
        call_command("migrate", interactive=False, verbosity=0)
        self._ensure_admin_user()
        if settings.BUS_EMBEDDED_BROKER:
            _forget_monitor_queues()

        python, manage = sys.executable, str(Path(settings.BASE_DIR) / "manage.py")
        commands = {f"worker:{c}": [python, "-m", "workers", c, "--concurrency=2"] for c in registry.contexts()}
        commands["relay"] = [python, manage, "relay"]
        if not options["no_web"]:
            commands["web"] = [python, manage, "runserver", f"127.0.0.1:{options['web_port']}", "--noreload"]
        if not options["no_flower"]:
            # Flower is never open: its login comes from FLOWER_BASIC_AUTH or is made up now.
            flower_auth = os.environ.get("FLOWER_BASIC_AUTH") or f"admin:{secrets.token_urlsafe(12)}"
            commands["flower"] = [
                python, "-m", "celery", "-A", "config", "flower",
                f"--port={options['flower_port']}", "--address=127.0.0.1", f"--basic-auth={flower_auth}",
                f"--conf={Path(settings.BASE_DIR) / 'platform' / 'config' / 'flowerconfig.py'}",  # /metrics too
            ]
            self.stdout.write(f"flower login (user:password): {flower_auth}")
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "config.settings.local"),
            # For `celery -A config` (Flower): config lives in platform/.
            "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(settings.BASE_DIR) / "platform"),
                                                         str(settings.BASE_DIR), os.environ.get("PYTHONPATH")])),
        }
        # Own sessions: Ctrl-C reaches this supervisor only, which then stops
        # each process in order instead of all of them being hit at once.
        # Workers and the relay without DEBUG (local settings default to it): no debug
        # cursor wrapping every query. The web admin keeps it (runserver serves static files).
        bus_env = {**env, "DJANGO_DEBUG": os.environ.get("DJANGO_DEBUG", "false")}
        processes = {
            name: subprocess.Popen(argv, cwd=settings.BASE_DIR, start_new_session=True,
                                   env=bus_env if name == "relay" or name.startswith("worker:") else env)
            for name, argv in commands.items()
        }
        self.stdout.write(self.style.SUCCESS(
            f"running: {', '.join(processes)}\n"
            f"  admin:  http://127.0.0.1:{options['web_port']}/admin/\n"
            f"  flower: http://127.0.0.1:{options['flower_port']}/\n"
            "Ctrl-C stops everything."
        ))
        self._supervise(processes)

    def _announce_mode(self):
        database = settings.DATABASES["default"]
        if settings.BUS_EMBEDDED_BROKER:
            self.stdout.write(self.style.WARNING(
                "EMBEDDED MODE: filesystem broker in "
                f"{Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS['data_folder_in']).parent}, "
                f"{database['ENGINE'].rsplit('.', 1)[-1]} database {database['NAME']}.\n"
                "For trying the platform only: a worker killed outright loses the message it held. "
                "Set CELERY_BROKER_URL (RabbitMQ) and DATABASE_URL (PostgreSQL) for real use."
            ))
        else:
            self.stdout.write(f"broker {settings.CELERY_BROKER_URL.split('@')[-1]}, database {database['NAME']}")

    def _ensure_admin_user(self) -> None:
        """Create the admin login on the first run, with a password nobody could guess."""
        users = get_user_model().objects
        if users.filter(username=ADMIN_USERNAME).exists():
            self.stdout.write(f"admin user '{ADMIN_USERNAME}': password as set on the first run")
            return
        password = os.environ.get("DJANGO_SUPERUSER_PASSWORD") or secrets.token_urlsafe(12)
        users.create_superuser(ADMIN_USERNAME, email="", password=password)
        self.stdout.write(self.style.SUCCESS(f"created admin user '{ADMIN_USERNAME}' with password: {password}"))

    def _supervise(self, processes: dict[str, subprocess.Popen]) -> None:
        stopping = []
        signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
        signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
        exited = None
        while not stopping and exited is None:
            time.sleep(0.5)
            exited = next((name for name, p in processes.items() if p.poll() is not None), None)
        if exited:
            self.stderr.write(f"{exited} exited with code {processes[exited].returncode}; stopping the rest")
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for process in processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
        if exited:
            sys.exit(1)


def _forget_monitor_queues() -> None:
    """Drop the event-monitor queues a previous Flower left on the filesystem broker.

    On RabbitMQ they are auto-deleted when their consumer goes; the filesystem
    transport cannot do that, so every event would pile up in a dead queue.
    """
    options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
    (Path(options["control_folder"]) / "celeryev.exchange").unlink(missing_ok=True)
    queues = Path(options["data_folder_in"])
    # One folder per queue (messaging.embedded_broker); loose files from kombu's flat layout too.
    for message in [*queues.glob("celeryev.*/*"), *queues.glob("*.celeryev.*.msg")]:
        message.unlink(missing_ok=True)
