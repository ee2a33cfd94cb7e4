from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from messaging.health import read_health, read_healths


class Command(BaseCommand):
    help = (
        "Exit 0 if each named process (worker-<context>, relay) is healthy: every process of that name "
        "running on this host has a fresh liveness file and is consuming, publishing or idle; else say why "
        "and exit 1. For supervisors' health checks."
    )

    def add_arguments(self, parser):
        parser.add_argument("names", nargs="+", help="worker-<context> or relay")
        parser.add_argument("--pid", type=int, default=None,
                            help="only the process with this pid (several of one name may run on a host)")
        parser.add_argument("--max-age", type=float, default=None,
                            help=f"seconds without a beat that count as stuck (default BUS_HEALTH_MAX_AGE, "
                                 f"{settings.BUS_HEALTH_MAX_AGE:g})")

    def handle(self, *args, **options):
        max_age = options["max_age"] or settings.BUS_HEALTH_MAX_AGE
        problems = []
        for name in options["names"]:
            if options["pid"] is None:
                healths = read_healths(name)
            else:
                healths = [health] if (health := read_health(name, options["pid"])) else []
            if not healths:
                problems.append(f"{name}: no liveness file in {settings.BUS_HEALTH_DIR} (not started, or stopped)")
            for health in healths:
                if problem := health.problem(max_age=max_age):
                    problems.append(problem)
                else:
                    self.stdout.write(f"{name}: {health.state} (pid {health.pid})")
        if problems:
            raise CommandError("; ".join(problems))
