import json

from django.core.management.base import BaseCommand

from messaging.topology import Topology


class Command(BaseCommand):
    help = "Show the exchanges, queues, bindings and handlers derived from the code."

    def add_arguments(self, parser):
        parser.add_argument("--format", choices=["text", "json"], default="text")

    def handle(self, *args, **options):
        topology = Topology().describe()
        if options["format"] == "json":
            self.stdout.write(json.dumps(topology, indent=2))
            return
        self.stdout.write("Exchanges")
        for exchange in topology["exchanges"]:
            self.stdout.write(f"  {exchange['name']}  ({exchange['type']})")
        self.stdout.write("Queues")
        for queue in topology["queues"]:
            self.stdout.write(f"  {queue['name']}")
            for bound in queue["bindings"]:
                self.stdout.write(f"    <- {bound['exchange']}  key={bound['routing_key']}")
        self.stdout.write("Contexts")
        for context, about in topology["contexts"].items():
            self.stdout.write(f"  {context}: consumes {', '.join(about['queues'])}")
            for handler in about["handlers"]:
                self.stdout.write(f"    {handler['kind']:7} {handler['message_type']:35} -> {handler['handler']}")
