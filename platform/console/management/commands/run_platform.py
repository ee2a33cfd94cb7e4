"""Run the whole platform in one terminal: every context worker, the relay,
the web admin and Flower, as separate processes supervised together.

On the embedded default (filesystem broker, SQLite) it says so: that mode is
for trying the platform; the reliability promises hold on RabbitMQ and
PostgreSQL. Once every process is up, the addresses and logins are printed
again, below the processes' own start-up lines.
"""

import argparse
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, DjangoHelpFormatter

from messaging import brokers, metrics
from messaging.health import read_health
from messaging.management.commands._stop_signals import stop_requested
from messaging.registry import registry

#: The admin login created on the first run.
ADMIN_USERNAME = "admin"
#: Seconds a process gets to finish its current work after SIGTERM.
STOP_GRACE_SECONDS = 15
#: Default ports, on 127.0.0.1 only.
WEB_PORT, FLOWER_PORT = 8000, 5555
#: Seconds to wait for every process to be up before printing the logins anyway, with what is missing.
READY_WAIT_SECONDS = 60

EPILOG = f"""\
ports (on 127.0.0.1 only):
  --web-port    the Django admin, http://127.0.0.1:{WEB_PORT}/admin/ by default
  --flower-port Flower, http://127.0.0.1:{FLOWER_PORT}/ by default

logins:
  admin   user "{ADMIN_USERNAME}", created on the first run with the password in
          DJANGO_SUPERUSER_PASSWORD or a random one, printed that once;
          `python manage.py changepassword {ADMIN_USERNAME}` sets a new one.
  Flower  FLOWER_BASIC_AUTH (user:password) if set, else user "admin" with a
          new random password at every start.
  Both are printed at start and again once every process is up.

Without CELERY_BROKER_URL and DATABASE_URL it runs on the embedded default
(filesystem broker and SQLite in BUS_DATA_DIR, ./var), for trying it out.
Then `python manage.py seed_demo` makes products and baskets to check out.
"""


class Command(BaseCommand):
    help = "Run every context worker, the relay, the web admin and Flower together, until Ctrl-C."

    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, epilog=EPILOG, **kwargs)
        parser.formatter_class = _EpilogAsWritten
        return parser

    def add_arguments(self, parser):
        parser.add_argument("--web-port", type=int, default=WEB_PORT,
                            help=f"port of the Django admin on 127.0.0.1 (default {WEB_PORT})")
        parser.add_argument("--flower-port", type=int, default=FLOWER_PORT,
                            help=f"port of Flower on 127.0.0.1 (default {FLOWER_PORT})")
        parser.add_argument("--no-web", action="store_true", help="do not start the web admin")
        parser.add_argument("--no-flower", action="store_true", help="do not start Flower")

    def handle(self, *args, **options):
        self._announce_mode()
        call_command("migrate", interactive=False, verbosity=0)
        admin_password = self._ensure_admin_user()
        brokers.current().forget_leftovers()
        # Every process of this host starts now: counts of an earlier run would add to theirs.
        metrics.clear_folder()

        python, manage = sys.executable, str(Path(settings.BASE_DIR) / "manage.py")
        commands = {f"worker:{c}": [python, "-m", "workers", c, "--concurrency=2"] for c in registry.contexts()}
        commands["relay"] = [python, manage, "relay"]
        if not options["no_web"]:
            commands["web"] = [python, manage, "runserver", f"127.0.0.1:{options['web_port']}", "--noreload"]
        flower_auth = None
        if not options["no_flower"]:
            # Flower is never open: its login comes from FLOWER_BASIC_AUTH or is made up now.
            flower_auth = os.environ.get("FLOWER_BASIC_AUTH") or f"admin:{secrets.token_urlsafe(12)}"
            commands["flower"] = [
                python, "-m", "celery", "-A", "config", "flower",
                f"--port={options['flower_port']}", "--address=127.0.0.1", f"--basic-auth={flower_auth}",
                f"--conf={Path(settings.BASE_DIR) / 'platform' / 'config' / 'flowerconfig.py'}",  # /metrics too
            ]
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
        envs = {name: bus_env for name in commands if name == "relay" or name.startswith("worker:")}
        # Flower logs every registered task at start and every page it serves at INFO.
        envs["flower"] = {**env, "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING")}
        processes = {
            name: subprocess.Popen(argv, cwd=settings.BASE_DIR, start_new_session=True, env=envs.get(name, env))
            for name, argv in commands.items()
        }
        logins = self._logins(options, admin_password, flower_auth)
        self.stdout.write(self.style.SUCCESS(f"starting: {', '.join(processes)}\n{logins}"))
        self._supervise(processes, ready=_readiness(processes, options), logins=logins)

    def _logins(self, options, admin_password: str | None, flower_auth: str | None) -> str:
        """Where to go and how to log in, to print at start and again once everything is up."""
        password = admin_password or (f"as set on the first run (`python manage.py changepassword "
                                      f"{ADMIN_USERNAME}` sets a new one)")
        lines = []
        if not options["no_web"]:
            lines.append(f"  admin:  http://127.0.0.1:{options['web_port']}/admin/  "
                         f"user {ADMIN_USERNAME}, password {password}")
        if flower_auth:
            user, _, flower_password = flower_auth.partition(":")
            lines.append(f"  flower: http://127.0.0.1:{options['flower_port']}/  "
                         f"user {user}, password {flower_password}")
        lines.append("Ctrl-C stops everything.")
        return "\n".join(lines)

    def _announce_mode(self):
        database = settings.DATABASES["default"]
        broker = brokers.current()
        if broker.for_trying_only:
            self.stdout.write(self.style.WARNING(
                f"EMBEDDED MODE: {broker.describe()}, "
                f"{database['ENGINE'].rsplit('.', 1)[-1]} database {database['NAME']}.\n"
                "For trying the platform only: a worker killed outright loses the message it held. "
                "Set CELERY_BROKER_URL (RabbitMQ or Redis) and DATABASE_URL (PostgreSQL) for real use."
            ))
        else:
            self.stdout.write(f"broker {broker.label} at {broker.describe()}, database {database['NAME']}")

    def _ensure_admin_user(self) -> str | None:
        """Create the admin login on the first run, with a password nobody could guess; returns it then."""
        users = get_user_model().objects
        if users.filter(username=ADMIN_USERNAME).exists():
            self.stdout.write(f"admin user '{ADMIN_USERNAME}': password as set on the first run")
            return None
        password = os.environ.get("DJANGO_SUPERUSER_PASSWORD") or secrets.token_urlsafe(12)
        users.create_superuser(ADMIN_USERNAME, email="", password=password)
        self.stdout.write(self.style.SUCCESS(f"created admin user '{ADMIN_USERNAME}' with password: {password}"))
        return password

    def _supervise(self, processes: dict[str, subprocess.Popen], *, ready, logins: str) -> None:
        stopping = stop_requested()
        exited = None
        announce_by = time.monotonic() + READY_WAIT_SECONDS
        while not stopping() and exited is None:
            time.sleep(0.5)
            exited = next((name for name, p in processes.items() if p.poll() is not None), None)
            if announce_by is not None and exited is None:
                waiting = [name for name, is_up in ready.items() if not is_up()]
                if not waiting or time.monotonic() > announce_by:
                    self._announce_up(waiting, logins)
                    announce_by = None
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


    def _announce_up(self, waiting: list[str], logins: str) -> None:
        if waiting:
            self.stdout.write(self.style.WARNING(
                f"not up after {READY_WAIT_SECONDS}s: {', '.join(waiting)} (see its output above)"
            ))
        else:
            self.stdout.write(self.style.SUCCESS("every process is up."))
        self.stdout.write(self.style.SUCCESS(logins))


class _EpilogAsWritten(DjangoHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Django's help layout, with the epilog's lines kept as written."""


def _readiness(processes: dict[str, subprocess.Popen], options) -> dict:
    """A check per process that says when it is up: workers and the relay by their
    liveness files (written by that very process), web and Flower by their port."""
    checks = {}
    for name, process in processes.items():
        if name.startswith("worker:") or name == "relay":
            health_name = "worker-" + name.removeprefix("worker:") if name != "relay" else "relay"
            checks[name] = lambda health_name=health_name, pid=process.pid: _healthy(health_name, pid)
        else:
            port = options["web_port"] if name == "web" else options["flower_port"]
            checks[name] = lambda port=port: _listening(port)
    return checks


def _healthy(health_name: str, pid: int) -> bool:
    health = read_health(health_name, pid)
    return health is not None and health.problem(max_age=settings.BUS_HEALTH_MAX_AGE) is None


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
