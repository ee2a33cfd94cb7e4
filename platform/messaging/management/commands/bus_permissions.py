import os
import secrets
import urllib.parse

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from messaging import broker_permissions, brokers
from messaging.topology_plan import TopologyPlanError


class Command(BaseCommand):
    help = (
        "Derive one RabbitMQ user per context's worker and one for the relay, each allowed only what its "
        "role does, and print the rabbitmqctl commands that make them (a placeholder for each password). "
        "With --apply, make them through the management API (an administrator's: BUS_RABBITMQ_MANAGEMENT_URL); "
        "each password from BUS_BROKER_PASSWORD_<ROLE>, or generated and printed once, in the role's "
        "broker URL, to standard error."
    )

    def add_arguments(self, parser):
        parser.add_argument("--vhost", help="the vhost the users get their permissions on (default: CELERY_BROKER_URL's)")
        parser.add_argument("--user-prefix", default="bus-",
                            help="each user is named <prefix><role>, the role being relay or a context (default bus-)")
        parser.add_argument("--apply", action="store_true",
                            help="create or update the users and their permissions on the broker")

    def handle(self, *args, **options):
        broker = brokers.current()
        api = broker.management_api()
        if api is None:
            raise CommandError(f"bus_permissions makes RabbitMQ users; the broker is the {broker.label} "
                               "(on Redis, see docs/how-to/deploy.md, Least privilege on the broker)")
        vhost = options["vhost"] or urllib.parse.unquote(urllib.parse.urlsplit(
            settings.CELERY_BROKER_URL.split(";")[0]).path.removeprefix("/")) or "/"
        prefix = options["user_prefix"]
        permissions = broker_permissions.derive()
        if not options["apply"]:
            self.stdout.write("\n".join(broker_permissions.rabbitmqctl_commands(permissions, vhost=vhost, prefix=prefix)))
            return
        passwords, generated = {}, []
        for role in permissions:
            passwords[role.role] = os.environ.get(broker_permissions.password_variable(role.role), "")
            if not passwords[role.role]:
                passwords[role.role] = secrets.token_urlsafe(24)
                generated.append(role)
        try:
            broker_permissions.apply(permissions, api, vhost=vhost, prefix=prefix, passwords=passwords)
        except TopologyPlanError as exc:
            raise CommandError(str(exc)) from exc
        # Once, and never on standard output (which a deploy log keeps): nobody can ask for them again.
        for role in generated:
            url = broker_permissions.role_url(settings.CELERY_BROKER_URL, user=role.user(prefix),
                                              password=passwords[role.role], vhost=vhost)
            self.stderr.write(f"{broker_permissions.url_variable(role.role)}={url}")
        for role in permissions:
            self.stdout.write(f"{role.user(prefix)}: configure {role.configure} write {role.write} read {role.read}")
