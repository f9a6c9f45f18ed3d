"""Print the agent registry: `python manage.py list_agents`."""

from django.core.management.base import BaseCommand

from agents.registry import registered_agents


class Command(BaseCommand):
    help = "List the registered agents: name, version, queue and description."

    def handle(self, *args, **options):
        rows = [("NAME", "VERSION", "QUEUE", "DESCRIPTION")]
        rows += [(a.name, a.version, a.queue, a.description) for a in registered_agents()]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        for name, version, queue, description in rows:
            cells = (name.ljust(widths[0]), version.ljust(widths[1]), queue.ljust(widths[2]), description)
            self.stdout.write("  ".join(cells))
